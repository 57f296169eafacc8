//! Hot reload: on SIGHUP, and when the config file changes on disk, the file is read and
//! validated again and swapped in whole. Open connections use the new rules for their next
//! message. A file that fails validation changes nothing: the old config stays live.
//!
//! The file is polled (its identity and modification time, followed through symlinks) rather
//! than watched with inotify: Kubernetes updates a mounted ConfigMap by swapping a symlink, which
//! a poll sees the same way as an edit in place.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::config::{Config, ConfigError, Overrides};
use crate::state::{AppState, ReloadStatus};

const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Re-reads `path` and swaps it in when valid. Settings that only apply at start (listeners,
/// threads, connection limit) keep their running values and are reported as needing a restart.
pub fn reload(
    state: &AppState,
    path: &Path,
    overrides: &Overrides,
) -> Result<Vec<String>, ConfigError> {
    let result = Config::load(Some(path), overrides);
    let outcome = match result {
        Ok(mut new) => {
            let running = state.config();
            let mut needs_restart = Vec::new();
            let changed = running.server.changed_keys(&new.server);
            if !changed.is_empty() {
                needs_restart.push(format!(
                    "[server] changes need a restart: {}",
                    changed.join(", ")
                ));
                new.server = running.server.clone();
            }
            state.metrics.register_rules(new.rules.rule_names());
            state
                .metrics
                .register_subprotocols(&new.websocket.subprotocols);
            state.swap_config(new);
            Ok(needs_restart)
        }
        Err(e) => Err(e),
    };
    state.metrics.config_reload(outcome.is_ok());
    state.set_reload_status(ReloadStatus {
        at: SystemTime::now(),
        ok: outcome.is_ok(),
        message: match &outcome {
            Ok(notes) if notes.is_empty() => "applied".to_string(),
            Ok(notes) => format!("applied; {}", notes.join("; ")),
            Err(e) => e.to_string(),
        },
    });
    outcome
}

/// Identity of the file behind `path` (through symlinks): changes on edit and on symlink swap.
fn fingerprint(path: &Path) -> Option<(u64, u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.modified().ok()?, m.len()))
}

/// Runs reloads for the life of the process.
pub struct ReloadService {
    pub state: Arc<AppState>,
    pub path: PathBuf,
    pub overrides: Overrides,
}

impl ReloadService {
    fn reload_and_log(&self, trigger: &str) {
        match reload(&self.state, &self.path, &self.overrides) {
            Ok(notes) => {
                tracing::info!(trigger, file = %self.path.display(), "Configuration reloaded.");
                for note in notes {
                    tracing::warn!(trigger, "{note}; the running values stay until then.");
                }
            }
            Err(e) => tracing::error!(
                trigger,
                error = %e,
                "Configuration reload failed; the previous configuration stays live."
            ),
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGHUP; reload on file change only.");
                None
            }
        };
        let mut seen = fingerprint(&self.path);
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    seen = fingerprint(&self.path);
                    self.reload_and_log("sighup");
                }
                _ = tick.tick() => {
                    let now = fingerprint(&self.path);
                    if now.is_some() && now != seen {
                        seen = now;
                        self.reload_and_log("file_changed");
                    }
                }
            }
        }
    }
}
