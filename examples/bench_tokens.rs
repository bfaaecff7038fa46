//! Mints JWTs for the benchmarks in `bench/` and registers them in a tokengate allowlist.
//!
//! Writes `--count` signed tokens (`sub` = one of `--users` users, round robin; `iat` now,
//! `exp` now + `--ttl`; a unique `jti`), and optionally:
//!
//! - `--file FILE`: the tokens, one per line (all of them, or `--file-count K` of them
//!   spread evenly over the set, e.g. 10k of 1M);
//! - `--sqlite DB` or `--postgres URL`: one `valid_token` row per token, written the way
//!   tokengate writes a captured token: `token_hash` = SHA-256 of the signing input
//!   (`header.payload`, the text before the last `.`), a random unique hex `session_id`,
//!   `user_id` = `sub`, `issued_at` = `iat`, `expires_at` = `exp`, `created_at` = now.
//!   All rows go in one transaction (SQLite) or in batches of 5,000 (PostgreSQL). The
//!   schema must exist: run tokengate once on that store first (`tokengate prune
//!   --config ...` creates it and exits).
//!
//! Tokens are minted on every core, in chunks, so 1M HS256 tokens take seconds and
//! little memory.
//!
//! ```text
//! cargo run --release --example bench_tokens -- --alg HS256 --secret "$SECRET" \
//!     --count 10000 --users 1000 --file tokens.txt --sqlite tokengate.db
//! cargo run --release --example bench_tokens -- --alg RS256 \
//!     --key-file tests/keys/rsa_private.pem --count 10000 --file rs.txt
//! ```

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Mint benchmark JWTs and register them in a tokengate allowlist.
#[derive(Debug, Parser)]
struct Args {
    /// Signing algorithm: HS256, HS384, HS512, RS256, PS256, ES256, ES384, EdDSA ...
    #[arg(long, default_value = "HS256")]
    alg: String,
    /// HMAC secret (HS*); at least 32 bytes for tokengate to accept it.
    #[arg(long)]
    secret: Option<String>,
    /// Private key PEM (RS*, PS*, ES*, EdDSA).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// How many tokens to mint (and register).
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// How many distinct users (`sub`); default count / 10, at least 1.
    #[arg(long)]
    users: Option<usize>,
    /// Write tokens here, one per line.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Write only this many tokens to --file, evenly spread over the set.
    #[arg(long)]
    file_count: Option<usize>,
    /// Register every token in this SQLite allowlist (tokengate's schema must exist).
    #[arg(long, conflicts_with = "postgres")]
    sqlite: Option<PathBuf>,
    /// Register every token in this PostgreSQL allowlist (URL as in store.postgres_url).
    #[arg(long)]
    postgres: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 7200)]
    ttl: i64,
    /// Prefix of user ids.
    #[arg(long, default_value = "user-")]
    user_prefix: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: i64,
    exp: i64,
    jti: String,
}

/// One minted token and the allowlist row that goes with it.
struct Minted {
    token: String,
    hash: [u8; 32],
    session_id: String,
    user: String,
}

const CHUNK: usize = 20_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let alg: Algorithm = args
        .alg
        .parse()
        .with_context(|| format!("unknown algorithm {}", args.alg))?;
    let key = encoding_key(alg, &args)?;
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let users = args.users.unwrap_or(args.count / 10).max(1);
    let file_count = args.file_count.unwrap_or(args.count).min(args.count);
    let stride = args.count.checked_div(file_count).unwrap_or(usize::MAX);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    // A per-run tag keeps every run's tokens distinct from every other run's.
    let tag = hex::encode(rand::random::<[u8; 4]>());

    let mut file = match &args.file {
        Some(p) => Some(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("create {}", p.display()))?,
        )),
        None => None,
    };
    let mut sink = match (&args.sqlite, &args.postgres) {
        (Some(path), _) => Some(Sink::sqlite(path)?),
        (None, Some(url)) => Some(Sink::postgres(url)?),
        (None, None) => None,
    };

    let started = Instant::now();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (mut written, mut start) = (0usize, 0usize);
    while start < args.count {
        let end = (start + CHUNK).min(args.count);
        let minted = mint_chunk(
            start..end,
            threads,
            alg,
            &key,
            &args.user_prefix,
            users,
            now,
            args.ttl,
            &tag,
        )?;
        if let Some(f) = file.as_mut() {
            for (offset, m) in minted.iter().enumerate() {
                let i = start + offset;
                if written < file_count && i % stride == 0 {
                    writeln!(f, "{}", m.token)?;
                    written += 1;
                }
            }
        }
        if let Some(s) = sink.as_mut() {
            s.insert(&minted, now, args.ttl)?;
        }
        start = end;
    }
    if let Some(mut f) = file {
        f.flush()?;
    }
    if let Some(s) = sink {
        s.finish()?;
    }
    eprintln!(
        "bench_tokens: {} {} tokens for {} users ({} written to file{}) in {:.1}s",
        args.count,
        args.alg,
        users,
        if args.file.is_some() { written } else { 0 },
        match (&args.sqlite, &args.postgres) {
            (Some(_), _) => ", registered in SQLite",
            (None, Some(_)) => ", registered in PostgreSQL",
            _ => "",
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn encoding_key(alg: Algorithm, args: &Args) -> anyhow::Result<EncodingKey> {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => {
            let secret = args.secret.as_deref().context("HS* needs --secret")?;
            Ok(EncodingKey::from_secret(secret.as_bytes())?)
        }
        _ => {
            let path = args
                .key_file
                .as_ref()
                .context("this algorithm needs --key-file")?;
            let pem = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
            Ok(match alg {
                RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => EncodingKey::from_rsa_pem(&pem)?,
                ES256 | ES384 => EncodingKey::from_ec_pem(&pem)?,
                EdDSA => EncodingKey::from_ed_pem(&pem)?,
                _ => bail!("unsupported algorithm {alg:?}"),
            })
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn mint_chunk(
    range: std::ops::Range<usize>,
    threads: usize,
    alg: Algorithm,
    key: &EncodingKey,
    prefix: &str,
    users: usize,
    now: i64,
    ttl: i64,
    tag: &str,
) -> anyhow::Result<Vec<Minted>> {
    let header = Header::new(alg);
    let indices: Vec<usize> = range.collect();
    let per = indices.len().div_ceil(threads).max(1);
    let parts: Vec<anyhow::Result<Vec<Minted>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = indices
            .chunks(per)
            .map(|part| {
                let header = &header;
                scope.spawn(move || {
                    part.iter()
                        .map(|&i| {
                            let user = format!("{prefix}{}", i % users);
                            let claims = Claims {
                                sub: &user,
                                iat: now,
                                exp: now + ttl,
                                jti: format!("{tag}-{i}"),
                            };
                            let token = jsonwebtoken::encode(header, &claims, key)?;
                            let signing_input = &token[..token.rfind('.').expect("a JWT has dots")];
                            let hash: [u8; 32] = Sha256::digest(signing_input.as_bytes()).into();
                            Ok(Minted {
                                session_id: hex::encode(rand::random::<[u8; 16]>()),
                                token,
                                hash,
                                user,
                            })
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("minting thread"))
            .collect()
    });
    let mut all = Vec::with_capacity(indices.len());
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

/// Where allowlist rows go.
enum Sink {
    Sqlite(rusqlite::Connection),
    Postgres {
        runtime: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
    },
}

const COLUMNS: &str =
    "token_hash, session_id, user_id, issued_at, expires_at, created_at, user_agent, client_addr";

impl Sink {
    fn sqlite(path: &std::path::Path) -> anyhow::Result<Sink> {
        let conn =
            rusqlite::Connection::open(path).with_context(|| format!("open {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let exists: i64 = conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'valid_token'",
            [],
            |r| r.get(0),
        )?;
        if exists == 0 {
            bail!(
                "{} has no valid_token table: run tokengate on it once first",
                path.display()
            );
        }
        // Bulk load: this connection does not need each commit fsynced (one commit anyway).
        // A page cache large enough for the whole load keeps the random-key B-tree
        // inserts in memory until the commit (the default 2 MB spills constantly).
        conn.pragma_update(None, "synchronous", "OFF")?;
        conn.pragma_update(None, "cache_size", -512 * 1024)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(Sink::Sqlite(conn))
    }

    fn postgres(url: &str) -> anyhow::Result<Sink> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .context("connect to PostgreSQL")?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("bench_tokens: PostgreSQL connection: {e}");
                }
            });
            let exists: i64 = client
                .query_one(
                    "SELECT count(*) FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_name = 'valid_token'",
                    &[],
                )
                .await?
                .get(0);
            if exists == 0 {
                bail!("no valid_token table in the current schema: run tokengate on it once first");
            }
            Ok::<_, anyhow::Error>(client)
        })?;
        Ok(Sink::Postgres { runtime, client })
    }

    fn insert(&mut self, rows: &[Minted], now: i64, ttl: i64) -> anyhow::Result<()> {
        match self {
            Sink::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(&format!(
                    "INSERT INTO valid_token ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'bench', NULL)"
                ))?;
                for m in rows {
                    stmt.execute(rusqlite::params![
                        &m.hash[..],
                        m.session_id,
                        m.user,
                        now,
                        now + ttl,
                        now
                    ])?;
                }
                Ok(())
            }
            Sink::Postgres { runtime, client } => runtime.block_on(async {
                let sql = format!(
                    "INSERT INTO valid_token ({COLUMNS})
                     SELECT h, s, u, $4::bigint, $5::bigint, $6::bigint, 'bench', NULL
                     FROM unnest($1::bytea[], $2::text[], $3::text[]) AS t(h, s, u)"
                );
                let stmt = client.prepare(&sql).await?;
                for batch in rows.chunks(5_000) {
                    let hashes: Vec<&[u8]> = batch.iter().map(|m| &m.hash[..]).collect();
                    let sessions: Vec<&str> = batch.iter().map(|m| m.session_id.as_str()).collect();
                    let users: Vec<&str> = batch.iter().map(|m| m.user.as_str()).collect();
                    let exp = now + ttl;
                    client
                        .execute(&stmt, &[&hashes, &sessions, &users, &now, &exp, &now])
                        .await?;
                }
                Ok(())
            }),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Sink::Sqlite(conn) = self {
            conn.execute_batch("COMMIT")?;
            // Leave the file the way tokengate expects to find it.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        Ok(())
    }
}
