//! Changing the config of a running tokengate (SPEC §11): on SIGHUP, or when
//! `server.watch_config` is on and the config file or a file it names changed, the
//! file is loaded again and [`App::reload`] swaps the new policy in. A reload never
//! drops a connection and never resets a metric; a bad file is refused with the same
//! one-line error a start would print, and the current config stays.
//!
//! The watch polls: every [`WATCH_INTERVAL`] it hashes the config file and the files it
//! names. That sees a Kubernetes ConfigMap or Secret update (an atomic swap of a
//! symlinked directory, which changes no inode tokengate could watch) as well as an
//! edit in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::app::App;

/// How often `server.watch_config` looks at the files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What makes a reload.
pub struct Triggers {
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl Triggers {
    /// Installs the SIGHUP handler (until then SIGHUP would end the process): call it
    /// before serving.
    pub fn install() -> std::io::Result<Triggers> {
        Ok(Triggers {
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
        })
    }

    /// Reloads `app` from `path` on every trigger, for ever.
    pub async fn run(mut self, app: Arc<App>, path: PathBuf) {
        let watch = app.policy().config.server.watch_config;
        let mut seen = fingerprint(&path, &app);
        loop {
            let trigger = tokio::select! {
                () = self.hangup() => "SIGHUP",
                () = tokio::time::sleep(WATCH_INTERVAL), if watch => {
                    if fingerprint(&path, &app) == seen {
                        continue;
                    }
                    "file changed"
                }
            };
            reload(&app, &path, trigger).await;
            // After a refused reload too: a bad file is reported once, not every 2 s.
            seen = fingerprint(&path, &app);
        }
    }

    async fn hangup(&mut self) {
        #[cfg(unix)]
        {
            self.hangup.recv().await;
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    }
}

/// One reload, logged and counted (`tokengate_config_reloads_total{result}`).
pub async fn reload(app: &App, path: &Path, trigger: &str) -> bool {
    match app.reload(path).await {
        Ok(done) => {
            app.metrics.config_reload(true);
            tracing::info!(trigger, config = %path.display(), "config reloaded");
            if !done.needs_restart.is_empty() {
                tracing::warn!(
                    trigger,
                    keys = %done.needs_restart.join(", "),
                    "changed keys need a restart; they keep their current values"
                );
            }
            true
        }
        Err(e) => {
            app.metrics.config_reload(false);
            tracing::error!(trigger, config = %path.display(), error = %e, "config reload refused; the current config stays");
            false
        }
    }
}

/// SHA-256 over the config file and the files the current config names (a missing
/// file hashes as such).
fn fingerprint(path: &Path, app: &App) -> [u8; 32] {
    let mut hash = Sha256::new();
    let files = std::iter::once(path.to_path_buf()).chain(app.policy().config.named_files());
    for file in files {
        hash.update(file.as_os_str().as_encoded_bytes());
        match std::fs::read(&file) {
            Ok(bytes) => {
                hash.update([1]);
                hash.update(&bytes);
            }
            Err(_) => hash.update([0]),
        }
    }
    hash.finalize().into()
}
