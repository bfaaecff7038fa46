//! Listeners, connections and graceful shutdown.
//!
//! [`run`] serves the public and admin listeners until its `shutdown` future resolves,
//! then stops accepting and gives in-flight requests `server.shutdown_grace_seconds` to
//! finish (the shape of hyper-util's `graceful.rs`: every connection task holds a
//! receiver of one drain channel, told to shut down gracefully through it, and the
//! listener waits for the last receiver to go). Both listeners are passed in, bound,
//! so tests run on port 0. Each listener holds its connections to its limits (SPEC
//! §10, [`crate::connection`]): a budget of open connections, a first request head
//! due within `server.header_read_timeout_seconds` of accept, an idle timeout
//! (`server.idle_timeout_seconds`) after it, and on HTTP/2 a bound on concurrent
//! streams and keep-alive pings. The background prune, the revocation feed reader and
//! the idle-session sweep ([`crate::idle`]) run beside them (a provider's key set refreshes itself: [`crate::jwt::keys`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::App;
use crate::connection::{Activity, Budget, Deadline, Noting, Place, WriteDeadline};
use crate::context::{ClientConn, ConnInfo};
use crate::transport::{ClientIo, Tls};

/// More request headers than this get 431.
pub const MAX_HEADERS: usize = 100;
/// HTTP/2 connections are pinged this often, and closed when a ping goes unanswered
/// for as long.
const HTTP2_KEEP_ALIVE: Duration = Duration::from_secs(20);
/// Open connections of the admin listener: its own budget, so that probes and scrapes
/// keep answering while the public listener is full.
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Concurrent HTTP/2 streams per admin connection: probes and scrapes need few.
const ADMIN_HTTP2_MAX_STREAMS: u32 = 16;

/// Binds a listener, naming the address in the error (e.g. a port already in use).
pub async fn bind(what: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
}

/// Serves both listeners until `shutdown` resolves, then drains.
pub async fn run(
    app: Arc<App>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    // [server] and [upstream] take effect at start only (a reload keeps them).
    let boot = app.policy();
    let grace = boot.config.server.shutdown_grace;

    let pruner = tokio::spawn(prune_loop(app.clone(), stop_rx.clone()));
    let idle_sweep = app
        .idle
        .clone()
        .map(|idle| tokio::spawn(crate::idle::run(app.clone(), idle, stop_rx.clone())));
    let feed = app
        .feed_reader()
        .map(|reader| tokio::spawn(reader.run(stop_rx.clone())));
    let public_task = {
        let app = app.clone();
        let limits = Limits {
            name: "public",
            grace,
            http2_max_streams: boot.config.server.http2_max_streams,
            max_connections: boot.config.server.max_connections,
            header_read_timeout: boot.config.server.header_read_timeout,
            idle_timeout: boot.config.server.idle_timeout,
            write_timeout: boot.config.upstream.timeout,
        };
        let tls = {
            let app = app.clone();
            move || app.policy().tls.clone()
        };
        tokio::spawn(serve(
            public,
            stop_rx.clone(),
            limits,
            tls,
            move |peer, io: &ClientIo, place| {
                let app = app.clone();
                let trusted = app.policy().headers.is_trusted(peer.ip());
                let info = ConnInfo::new(peer, trusted, io.is_tls())
                    .with_client_subject(io.client_subject());
                if let Some(subject) = &info.client_subject {
                    tracing::debug!(%peer, client = %subject, "client certificate verified");
                }
                let conn = Arc::new(ClientConn::new(info, app.upstream.link(), place));
                service_fn(move |req| crate::gate::handle(app.clone(), conn.clone(), req))
            },
        ))
    };
    let admin_task = {
        let app = app.clone();
        let limits = Limits {
            name: "admin",
            grace,
            http2_max_streams: ADMIN_HTTP2_MAX_STREAMS,
            max_connections: ADMIN_MAX_CONNECTIONS,
            header_read_timeout: boot.config.server.header_read_timeout,
            idle_timeout: boot.config.server.idle_timeout,
            write_timeout: boot.config.upstream.timeout,
        };
        tokio::spawn(serve(
            admin,
            stop_rx,
            limits,
            || None,
            move |_peer, _io: &ClientIo, _place| {
                let app = app.clone();
                service_fn(move |req| crate::admin::handle(app.clone(), req))
            },
        ))
    };

    shutdown.await;
    tracing::info!(
        grace_seconds = grace.as_secs(),
        "shutting down: no new connections, draining"
    );
    let _ = stop_tx.send(true);
    let _ = public_task.await;
    let _ = admin_task.await;
    pruner.abort();
    if let Some(feed) = feed {
        feed.abort();
    }
    if let Some(sweep) = idle_sweep {
        sweep.abort();
        // The uses noted during the drain, for the next start (best effort).
        if let Some(idle) = &app.idle {
            if let Err(e) = idle.write(app.strategy.store()).await {
                tracing::warn!(error = %e, "could not record the last use of sessions at shutdown");
            }
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// What one listener allows.
struct Limits {
    /// The listener's name in logs.
    name: &'static str,
    /// How long its connections may take to finish after a shutdown signal.
    grace: Duration,
    /// Concurrent streams per HTTP/2 connection.
    http2_max_streams: u32,
    /// Open connections at once; past it, new ones are accepted and closed.
    max_connections: usize,
    /// From accept to the first request head, and for every HTTP/1.1 head.
    header_read_timeout: Duration,
    /// From a connection's latest request to its graceful close, when no other starts.
    idle_timeout: Duration,
    /// How long a response write may wait for a client that reads nothing.
    write_timeout: Duration,
}

/// Accepts connections on one listener until told to stop, then waits for its
/// connections to finish, at most `limits.grace`.
async fn serve<F, S>(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
    tls: impl Fn() -> Option<Tls>,
    make_service: F,
) where
    F: Fn(SocketAddr, &ClientIo, Arc<Place>) -> S + Send + Sync + 'static,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::Body>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let Limits {
        name,
        grace,
        header_read_timeout,
        ..
    } = limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(HTTP2_KEEP_ALIVE))
        .keep_alive_timeout(HTTP2_KEEP_ALIVE);
    let builder = Arc::new(builder);
    let make_service = Arc::new(make_service);
    let budget = Budget::new(limits.max_connections);
    let (drain, draining) = watch::channel(());
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(listener = name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(place) = budget.take() else {
                    // Accepted and closed at once: the listener is full.
                    tracing::debug!(listener = name, %peer, max = limits.max_connections, "connection limit reached; closed");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let activity = Activity::new();
                let (tls, builder, make_service) = (tls(), builder.clone(), make_service.clone());
                let draining = draining.clone();
                let (write_timeout, timeouts) = (limits.write_timeout, (header_read_timeout, limits.idle_timeout));
                tokio::spawn(async move {
                    // Held here until the connection ends, and by a tunnel it becomes.
                    let place = Arc::new(place);
                    // The handshake is part of the first request's time (SPEC §10).
                    let stream = match tls {
                        None => ClientIo::Plain(stream),
                        Some(tls) => {
                            let due = activity.deadline(header_read_timeout, timeouts.1).at();
                            match tokio::time::timeout_at(due, tls.accept(stream)).await {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed; closed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(listener = name, %peer, "no TLS handshake in time; closed");
                                    return;
                                }
                            }
                        }
                    };
                    let service = Noting::new(make_service(peer, &stream, place.clone()), activity.clone());
                    let stream = WriteDeadline::new(stream, write_timeout);
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
                    if let Err(e) = drive(connection, &activity, timeouts, draining).await {
                        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    drop(draining);
    let _ = drain.send(());
    tokio::select! {
        () = drain.closed() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(listener = name, "grace period over; closing the remaining connections");
        }
    }
}

/// Runs one connection to its end against its deadlines: dropped (closed at once) when
/// no request head arrives within the first of `timeouts`; shut down gracefully (in
/// flight responses finish, HTTP/2 says GOAWAY) when idle for the second, or when the
/// listener drains.
async fn drive<S>(
    connection: auto::UpgradeableConnection<
        'static,
        TokioIo<WriteDeadline<ClientIo>>,
        Noting<S>,
        TokioExecutor,
    >,
    activity: &Activity,
    (first_request, idle): (Duration, Duration),
    mut draining: watch::Receiver<()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::Body>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    tokio::pin!(connection);
    loop {
        let deadline = activity.deadline(first_request, idle);
        tokio::select! {
            result = &mut connection => return result,
            () = tokio::time::sleep_until(deadline.at()) => {
                match activity.deadline(first_request, idle) {
                    Deadline::FirstRequest(_) => {
                        tracing::debug!("no request head in time; closed");
                        return Ok(());
                    }
                    Deadline::Idle(at) if at <= tokio::time::Instant::now() => {
                        tracing::debug!(idle_seconds = idle.as_secs(), "idle connection; closing");
                        break;
                    }
                    // A request started since: wait from it.
                    Deadline::Idle(_) => {}
                }
            }
            // The first request: from now on the idle timeout counts.
            () = activity.first_request(), if matches!(deadline, Deadline::FirstRequest(_)) => {}
            _ = draining.changed() => break,
        }
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Deletes expired rows every `store.prune_interval_seconds`.
async fn prune_loop(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let interval = app.policy().config.store.prune_interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        match app.revocations.prune().await {
            Ok(report) if report.total() > 0 => tracing::info!(
                valid_token = report.valid_token,
                invalid_token = report.invalid_token,
                user_status = report.user_status,
                revocation_log = report.revocation_log,
                backchannel_jti = report.backchannel_jti,
                "pruned expired rows"
            ),
            Ok(_) => tracing::debug!("prune: nothing expired"),
            Err(e) => tracing::warn!(error = %e, "prune failed; will retry"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
