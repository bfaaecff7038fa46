//! A minimal, fast HTTP/1.1 backend for the benchmarks in `bench/`.
//!
//! Every request, whatever its method and path, gets `200 OK` with a small fixed body;
//! the request body (if any) is ignored. Keep-alive is on. One current-thread tokio
//! runtime: the harness pins the process to one core with `taskset`, so a single thread
//! is all it can use anyway, and there are no cross-thread wake-ups.
//!
//! ```text
//! cargo run --release --example bench_echo -- 127.0.0.1:18101
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"{\"ok\":true}\n";

async fn answer(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18101".into())
        .parse()
        .unwrap_or_else(|e| {
            eprintln!("bench_echo: usage: bench_echo HOST:PORT ({e})");
            std::process::exit(2);
        });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| {
            eprintln!("bench_echo: cannot listen on {addr}: {e}");
            std::process::exit(1);
        });
        eprintln!("bench_echo: listening on {addr}");
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    eprintln!("bench_echo: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
}
