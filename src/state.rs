//! What the whole process shares: the live config (swapped atomically on reload), metrics, the
//! connection count and the shutdown signal.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::rules::CompiledRules;

pub struct AppState {
    /// Read once per handshake and once per message; replaced whole on reload.
    config: ArcSwap<Config>,
    /// The live config's rules, swapped with it: what the relays read on every message.
    pub rules: Arc<ArcSwap<CompiledRules>>,
    pub metrics: Arc<Metrics>,
    /// Set to true once when the process starts shutting down.
    pub shutdown: watch::Sender<bool>,
    open_connections: AtomicUsize,
    next_connection_id: AtomicU64,
    last_reload: Mutex<Option<ReloadStatus>>,
}

/// The result of the last config reload, reported by `/readyz`.
#[derive(Debug, Clone)]
pub struct ReloadStatus {
    pub at: SystemTime,
    pub ok: bool,
    pub message: String,
}

impl AppState {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Arc<AppState> {
        metrics.config_loaded(&config);
        Arc::new(AppState {
            rules: Arc::new(ArcSwap::new(config.rules.clone())),
            config: ArcSwap::from_pointee(config),
            metrics,
            shutdown: watch::Sender::new(false),
            open_connections: AtomicUsize::new(0),
            next_connection_id: AtomicU64::new(1),
            last_reload: Mutex::new(None),
        })
    }

    /// The live config.
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The live config, held past a request's await points.
    pub fn config_full(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Replaces the live config and its rules (open connections see the rules on their next
    /// message).
    pub fn swap_config(&self, config: Config) {
        self.rules.store(config.rules.clone());
        self.config.store(Arc::new(config));
    }

    /// Takes one of `max` connection slots, or `None` when all are in use.
    pub fn try_open_connection(self: &Arc<Self>, max: usize) -> Option<ConnectionSlot> {
        let prev = self.open_connections.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            self.open_connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot {
            state: self.clone(),
            id: self.next_connection_id.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Acquire)
    }

    pub fn set_reload_status(&self, status: ReloadStatus) {
        if let Ok(mut last) = self.last_reload.lock() {
            *last = Some(status);
        }
    }

    pub fn reload_status(&self) -> Option<ReloadStatus> {
        self.last_reload.lock().ok().and_then(|l| l.clone())
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// One open WebSocket connection; the slot is given back when this is dropped.
pub struct ConnectionSlot {
    state: Arc<AppState>,
    pub id: u64,
}

impl ConnectionSlot {
    /// How long after the shutdown signal this connection is closed: its place in a drain
    /// spread over `spread`. Consecutive ids land far apart (multiples of the golden ratio,
    /// modulo 1), so the closes are even over the window however many connections are open.
    pub fn drain_delay(&self, spread: Duration) -> Duration {
        const GOLDEN: f64 = 0.618_033_988_749_895;
        spread.mul_f64((self.id as f64 * GOLDEN).fract())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.open_connections.fetch_sub(1, Ordering::AcqRel);
    }
}
