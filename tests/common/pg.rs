//! The PostgreSQL server of the tests: an admin connection, a fresh schema per test
//! ([`PgSchema`]) and a [`Relay`] that can cut a replica off from the database.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The PostgreSQL server of the tests (trust auth); `TOKENGATE_TEST_POSTGRES_URL`
/// overrides it.
pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// [`PG_URL`], or its override.
pub fn pg_url() -> String {
    std::env::var("TOKENGATE_TEST_POSTGRES_URL").unwrap_or_else(|_| PG_URL.to_string())
}

/// An admin connection to the test server (not a store: no schema of its own).
pub async fn pg_admin() -> tokio_postgres::Client {
    let url = pg_url();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (set TOKENGATE_TEST_POSTGRES_URL): {e}"));
    tokio::spawn(connection);
    client
}

/// A fresh schema `tg_<hex>` on the test server, so that tests sharing the server never
/// see each other's rows. Stores reach it through [`PgSchema::url`], whose
/// `search_path` and `application_name` are the schema's name. Dropped (best effort)
/// with the value.
pub struct PgSchema {
    pub name: String,
    pub url: String,
}

impl PgSchema {
    /// Creates the schema.
    pub async fn create() -> PgSchema {
        let name = format!("tg_{}", hex::encode(rand::random::<[u8; 8]>()));
        pg_admin()
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let url = PgSchema::url_for(&pg_url(), &name);
        PgSchema { name, url }
    }

    /// `base` with this schema as search path and application name.
    fn url_for(base: &str, name: &str) -> String {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-csearch_path%3D{name}&application_name={name}")
    }

    /// The schema's URL with the server's address replaced by `addr` (e.g. a relay).
    pub fn url_via(&self, addr: SocketAddr) -> String {
        let base: tokio_postgres::Config = pg_url().parse().unwrap();
        let user = base.get_user().unwrap_or("postgres");
        let db = base.get_dbname().unwrap_or(user);
        PgSchema::url_for(&format!("postgres://{user}@{addr}/{db}"), &self.name)
    }

    /// Ends every server session of this schema's stores (`pg_terminate_backend`);
    /// returns how many there were.
    pub async fn terminate_sessions(&self) -> i64 {
        let row = pg_admin()
            .await
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&self.name],
            )
            .await
            .unwrap();
        row.get(0)
    }

    /// The number of rows in one of the schema's tables.
    pub async fn rows(&self, table: &str) -> i64 {
        let sql = format!("SELECT count(*) FROM {}.{table}", self.name);
        pg_admin().await.query_one(&sql, &[]).await.unwrap().get(0)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // On its own thread and runtime: the test's runtime may be single-threaded, or
        // already unwinding from a failed assertion.
        let (url, name) = (pg_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let drop_schema = async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .ok()?;
                    tokio::spawn(connection);
                    let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                    client.batch_execute(&sql).await.ok()
                };
                tokio::time::timeout(Duration::from_secs(5), drop_schema)
                    .await
                    .ok()
                    .flatten()
            })
        })
        .join();
    }
}

/// A TCP relay in front of the PostgreSQL server that can be cut, like a network
/// partition between one replica and the database, and restored.
pub struct Relay {
    pub addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start() -> Relay {
        let base: tokio_postgres::Config = pg_url().parse().unwrap();
        let server = match &base.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => {
                format!("{host}:{}", base.get_ports().first().unwrap_or(&5432))
            }
            other => panic!("the relay needs a TCP server, not {other:?}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, watching) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut up = watching.clone();
                if !*up.borrow() {
                    continue; // dropped: the connection is reset at once
                }
                let server = server.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(server).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Relay { addr, up }
    }

    /// Cuts every relayed connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}
