//! The relay's metrics: messages, bytes, closes and connections, by route. A connection
//! resolves its route's series once ([`RelayMetrics::route`]), so relaying a message does no
//! label hashing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry,
};

use crate::metrics::{counter_vec, gauge_vec, histogram_vec};
use crate::relay::wire_metrics::{WireBytes, WireLeg};
use crate::rules::Direction;

/// Who closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    Client,
    Backend,
    Proxy,
}

impl Initiator {
    pub const ALL: [Initiator; 3] = [Initiator::Client, Initiator::Backend, Initiator::Proxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Backend => "backend",
            Initiator::Proxy => "proxy",
        }
    }
}

/// What a relayed data message was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// Text that parsed as JSON (went through the rules).
    Json,
    /// Text that is not JSON (relayed unchanged).
    Text,
    Binary,
}

const MESSAGE_KINDS: [&str; 3] = ["json", "text", "binary"];

/// The close codes that get their own label value; everything else is `other`.
const CLOSE_CODES: [&str; 11] = [
    "1000", "1001", "1002", "1003", "1006", "1007", "1008", "1009", "1011", "1012", "1013",
];

fn close_code_label(code: u16) -> &'static str {
    let text = code.to_string();
    CLOSE_CODES
        .iter()
        .find(|c| **c == text)
        .copied()
        .unwrap_or("other")
}

pub struct RelayMetrics {
    messages: IntCounterVec,
    bytes_received: IntCounterVec,
    bytes_sent: IntCounterVec,
    message_size: HistogramVec,
    closes: IntCounterVec,
    active: IntGaugeVec,
    duration: HistogramVec,
    wire: Arc<WireBytes>,
    /// Each route's series, resolved at its first connection and shared by all of them.
    routes: Mutex<HashMap<Box<str>, Arc<RouteMetrics>>>,
}

impl RelayMetrics {
    pub fn register(reg: &mut Registry) -> Result<RelayMetrics, prometheus::Error> {
        Ok(RelayMetrics {
            messages: counter_vec(
                reg,
                "wsnorm_messages_total",
                "Data messages relayed, by route, direction and kind (json, text, binary).",
                &["route", "direction", "kind"],
            )?,
            bytes_received: counter_vec(
                reg,
                "wsnorm_message_bytes_total",
                "Payload bytes of data messages received, by route and direction.",
                &["route", "direction"],
            )?,
            bytes_sent: counter_vec(
                reg,
                "wsnorm_message_bytes_sent_total",
                "Payload bytes of data messages sent on (after the rules), by route and direction.",
                &["route", "direction"],
            )?,
            message_size: histogram_vec(
                reg,
                "wsnorm_message_size_bytes",
                "Payload size of data messages received, by direction.",
                &["direction"],
                // 16 B .. 16 MiB.
                prometheus::exponential_buckets(16.0, 4.0, 11)?,
            )?,
            closes: counter_vec(
                reg,
                "wsnorm_closes_total",
                "WebSocket closes by route, close code and initiator (client, backend, proxy).",
                &["route", "code", "initiator"],
            )?,
            active: gauge_vec(
                reg,
                "wsnorm_connections_active",
                "WebSocket connections currently relayed, by route.",
                &["route"],
            )?,
            duration: histogram_vec(
                reg,
                "wsnorm_connection_duration_seconds",
                "How long relayed WebSocket connections lasted, by route.",
                &["route"],
                // 10 ms .. ~11.6 days.
                prometheus::exponential_buckets(0.01, 4.0, 15)?,
            )?,
            wire: Arc::new(WireBytes::register(reg)?),
            routes: Mutex::default(),
        })
    }

    /// Creates the series of the configured routes, so rate() and alerts see zeros, not gaps.
    pub fn register_routes(&self, routes: &[&str]) {
        for route in routes {
            for code in CLOSE_CODES {
                for who in Initiator::ALL {
                    self.closes.with_label_values(&[route, code, who.as_str()]);
                }
            }
            self.active.with_label_values(&[route]);
            self.duration.with_label_values(&[route]);
        }
    }

    /// The series of one route. `route` must be a configured pattern or
    /// [`crate::config::UNROUTED`], so the routes kept are bounded by the config.
    pub fn route(&self, route: &str) -> Arc<RouteMetrics> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still whole.
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = routes.get(route) {
            return series.clone();
        }
        let series = Arc::new(self.resolve(route));
        routes.insert(route.into(), series.clone());
        series
    }

    fn resolve(&self, route: &str) -> RouteMetrics {
        let per_dir = |family: &IntCounterVec| {
            Direction::ALL.map(|d| family.with_label_values(&[route, d.as_str()]))
        };
        RouteMetrics {
            route: route.into(),
            messages: Direction::ALL.map(|d| {
                MESSAGE_KINDS.map(|k| self.messages.with_label_values(&[route, d.as_str(), k]))
            }),
            bytes_received: per_dir(&self.bytes_received),
            bytes_sent: per_dir(&self.bytes_sent),
            message_size: Direction::ALL
                .map(|d| self.message_size.with_label_values(&[d.as_str()])),
            closes: self.closes.clone(),
            active: self.active.with_label_values(&[route]),
            duration: self.duration.with_label_values(&[route]),
            wire: self.wire.clone(),
        }
    }
}

/// One route's relay series, resolved once per route: a connection holds an `Arc` of them, not
/// its own copy.
pub struct RouteMetrics {
    route: Box<str>,
    messages: [[IntCounter; 3]; 2],
    bytes_received: [IntCounter; 2],
    bytes_sent: [IntCounter; 2],
    message_size: [Histogram; 2],
    closes: IntCounterVec,
    active: IntGauge,
    duration: Histogram,
    wire: Arc<WireBytes>,
}

impl RouteMetrics {
    /// A message received (its first frame, for a binary message relayed frame by frame).
    pub fn message(&self, dir: Direction, kind: MessageKind, bytes: usize) {
        let d = dir.index();
        self.messages[d][kind as usize].inc();
        self.bytes_received[d].inc_by(bytes as u64);
    }

    /// A later frame of a binary message relayed frame by frame.
    pub fn fragment(&self, dir: Direction, bytes: usize) {
        self.bytes_received[dir.index()].inc_by(bytes as u64);
    }

    /// A whole message's size, once it is complete.
    pub fn message_size(&self, dir: Direction, bytes: usize) {
        self.message_size[dir.index()].observe(bytes as f64);
    }

    /// Payload bytes sent on in direction `dir`.
    pub fn sent(&self, dir: Direction, bytes: usize) {
        self.bytes_sent[dir.index()].inc_by(bytes as u64);
    }

    /// One frame's worth of a message on `leg`: `payload` bytes, `wire` on its socket.
    pub fn wire(&self, leg: WireLeg, dir: Direction, payload: usize, wire: usize) {
        self.wire.count(leg, dir, payload, wire);
    }

    /// One frame of a compressed message passed through as it came, `wire` bytes.
    pub fn passed(&self, dir: Direction, wire: usize) {
        self.wire.passed(dir, wire);
    }

    /// Counted once per connection leg, so the label lookup is not on a per-message path.
    pub fn close(&self, code: u16, initiator: Initiator) {
        self.closes
            .with_label_values(&[&self.route, close_code_label(code), initiator.as_str()])
            .inc();
    }

    /// Counts the connection as active until the returned guard is dropped, then records how
    /// long it lasted.
    pub fn open(&self) -> OpenConnection {
        self.active.inc();
        OpenConnection {
            active: self.active.clone(),
            duration: self.duration.clone(),
            since: Instant::now(),
        }
    }
}

/// A relayed connection, counted in `wsnorm_connections_active` while it lives.
pub struct OpenConnection {
    active: IntGauge,
    duration: Histogram,
    since: Instant,
}

impl OpenConnection {
    /// How long it has been open.
    pub fn elapsed(&self) -> std::time::Duration {
        self.since.elapsed()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.active.dec();
        self.duration.observe(self.since.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode;

    fn metrics() -> (Registry, RelayMetrics) {
        let mut reg = Registry::new();
        let m = RelayMetrics::register(&mut reg).unwrap();
        (reg, m)
    }

    #[test]
    fn close_codes_outside_the_fixed_set_are_other() {
        let (reg, m) = metrics();
        let route = m.route("/ws");
        route.close(1011, Initiator::Backend);
        route.close(4000, Initiator::Client);
        let text = encode(&reg);
        assert!(
            text.contains(r#"wsnorm_closes_total{code="1011",initiator="backend",route="/ws"} 1"#)
        );
        assert!(
            text.contains(r#"wsnorm_closes_total{code="other",initiator="client",route="/ws"} 1"#)
        );
        assert!(!text.contains("4000"));
    }

    #[test]
    fn messages_split_by_route_direction_and_kind() {
        let (reg, m) = metrics();
        let route = m.route("/ws");
        route.message(Direction::BackendToClient, MessageKind::Binary, 10);
        route.fragment(Direction::BackendToClient, 5);
        route.message_size(Direction::BackendToClient, 15);
        route.sent(Direction::BackendToClient, 15);
        let text = encode(&reg);
        assert!(text.contains(
            r#"wsnorm_messages_total{direction="backend_to_client",kind="binary",route="/ws"} 1"#
        ));
        assert!(text.contains(
            r#"wsnorm_message_bytes_total{direction="backend_to_client",route="/ws"} 15"#
        ));
        assert!(text.contains(
            r#"wsnorm_message_bytes_sent_total{direction="backend_to_client",route="/ws"} 15"#
        ));
        assert!(text.contains(
            r#"wsnorm_message_size_bytes_bucket{direction="backend_to_client",le="16"} 1"#
        ));
    }

    #[test]
    fn an_open_connection_is_active_until_dropped_then_timed() {
        let (reg, m) = metrics();
        let open = m.route("/ws").open();
        assert!(encode(&reg).contains(r#"wsnorm_connections_active{route="/ws"} 1"#));
        drop(open);
        let text = encode(&reg);
        assert!(text.contains(r#"wsnorm_connections_active{route="/ws"} 0"#));
        assert!(text.contains(r#"wsnorm_connection_duration_seconds_count{route="/ws"} 1"#));
    }
}
