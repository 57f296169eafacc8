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

use prometheus::{Gauge, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use crate::config::{Config, ConfigError, Overrides};
use crate::metrics::{counter_vec, float_gauge, gauge, gauge_vec};
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
            state.metrics.config_loaded(&new);
            state.swap_config(new);
            Ok(needs_restart)
        }
        Err(e) => Err(e),
    };
    state.metrics.config.reload(outcome.is_ok());
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

/// The effective config's identity: a hash of what `wsnorm check` prints (the settings after
/// defaults and overrides, the routes and the compiled rules), the same on every pod that runs
/// the same config.
pub fn config_hash(config: &Config) -> String {
    // FNV-1a: stable across builds and Rust versions, unlike std's hasher.
    let hash = config
        .describe()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Config state: reloads, which config is live and since when.
pub struct ConfigMetrics {
    reloads: IntCounterVec,
    last_successful: IntGauge,
    info: IntGaugeVec,
    last_success: Gauge,
}

impl ConfigMetrics {
    pub fn register(reg: &mut Registry) -> Result<ConfigMetrics, prometheus::Error> {
        let m = ConfigMetrics {
            reloads: counter_vec(
                reg,
                "wsnorm_config_reloads_total",
                "Configuration reloads by result (ok, error).",
                &["result"],
            )?,
            last_successful: gauge(
                reg,
                "wsnorm_config_last_reload_successful",
                "1 if the last reload applied (or the config loaded at start), 0 if it failed.",
            )?,
            info: gauge_vec(
                reg,
                "wsnorm_config_info",
                "Always 1; the live config's hash (as /config shows it) is a label.",
                &["hash"],
            )?,
            last_success: float_gauge(
                reg,
                "wsnorm_config_last_reload_success_timestamp_seconds",
                "Unix time the live config was loaded (at start or by the last successful reload).",
            )?,
        };
        for result in ["ok", "error"] {
            m.reloads.with_label_values(&[result]);
        }
        Ok(m)
    }

    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        self.last_successful.set(i64::from(ok));
    }

    /// `config` is live from now on: one `wsnorm_config_info` series, with its hash.
    pub fn loaded(&self, config: &Config) {
        self.last_successful.set(1);
        self.info.reset();
        self.info.with_label_values(&[&config_hash(config)]).set(1);
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_success.set(now);
    }
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
