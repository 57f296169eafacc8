//! Prometheus metrics: one [`Registry`] for the whole process, served by the admin listener.
//!
//! Labels are bounded: directions, kinds, results and close codes come from fixed sets, rule
//! names from the config file. Never a user, a path or a connection id.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::rules::{Direction, Observer, RuleResult, TimestampFormat, Unparsed};

/// Who closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    Client,
    Upstream,
    Proxy,
}

impl Initiator {
    pub fn as_str(self) -> &'static str {
        match self {
            Initiator::Client => "client",
            Initiator::Upstream => "upstream",
            Initiator::Proxy => "proxy",
        }
    }
}

/// How a WebSocket handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    Upstream4xx,
    Upstream5xx,
    ConnectError,
    Timeout,
    BadRequest,
    NoCommonSubprotocol,
    Overloaded,
    /// The backend answered something that is not a valid WebSocket handshake.
    UpstreamInvalid,
    /// A token-bearing subprotocol whose token is not a valid bearer token.
    InvalidToken,
    /// `Origin` not in the route's `allowed_origins`.
    OriginRejected,
    /// An upgrade on a path that is no route, refused by `unrouted_upgrades = "refuse"`, or
    /// on a path whose meaning is ambiguous (`%2F`, NUL, invalid UTF-8).
    BadPath,
}

impl HandshakeResult {
    pub const ALL: [HandshakeResult; 12] = [
        HandshakeResult::Ok,
        HandshakeResult::Upstream4xx,
        HandshakeResult::Upstream5xx,
        HandshakeResult::ConnectError,
        HandshakeResult::Timeout,
        HandshakeResult::BadRequest,
        HandshakeResult::NoCommonSubprotocol,
        HandshakeResult::Overloaded,
        HandshakeResult::UpstreamInvalid,
        HandshakeResult::InvalidToken,
        HandshakeResult::OriginRejected,
        HandshakeResult::BadPath,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Upstream4xx => "upstream_4xx",
            HandshakeResult::Upstream5xx => "upstream_5xx",
            HandshakeResult::ConnectError => "connect_error",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::BadRequest => "bad_request",
            HandshakeResult::NoCommonSubprotocol => "no_common_subprotocol",
            HandshakeResult::Overloaded => "overloaded",
            HandshakeResult::UpstreamInvalid => "upstream_invalid",
            HandshakeResult::InvalidToken => "invalid_token",
            HandshakeResult::OriginRejected => "origin_rejected",
            HandshakeResult::BadPath => "bad_path",
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

pub(crate) fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::ClientToBackend => 0,
        Direction::BackendToClient => 1,
    }
}

/// Every wsnorm metric, registered in one registry. Hot-path children are resolved once here so
/// relaying a message does no label hashing.
pub struct Metrics {
    pub registry: Registry,
    conversion: [Histogram; 2],
    messages: [[IntCounter; 3]; 2],
    message_bytes: [IntCounter; 2],
    rewrites: IntCounterVec,
    /// The current rules' `rewrites` children, in rule order, resolved when rules are loaded.
    rule_counters: ArcSwap<Vec<RuleCounters>>,
    /// Indexed like [`TimestampFormat::ALL`].
    timestamp_inputs: [IntCounter; 8],
    /// By direction, then indexed like [`Unparsed::ALL`].
    unparsed: [[IntCounter; 3]; 2],
    closes: IntCounterVec,
    pub connections_active: IntGauge,
    /// 1 when the last backend check connected, 0 when it failed.
    pub backend_up: IntGauge,
    handshakes: IntCounterVec,
    pub handshake_duration: Histogram,
    subprotocols: IntCounterVec,
    http_requests: IntCounterVec,
    config_reloads: IntCounterVec,
    /// Payload and wire bytes per leg: the compression ratio.
    pub wire: crate::wire_metrics::WireBytes,
}

impl Metrics {
    /// Creates and registers all metrics. Fails only on a programming error (duplicate names).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c);

        let conversion = HistogramVec::new(
            HistogramOpts::new(
                "wsnorm_conversion_duration_seconds",
                "Time to apply the rewrite rules to one JSON message.",
            )
            // 250 ns .. 16 ms: sub-microsecond rules up to pathological messages.
            .buckets(prometheus::exponential_buckets(250e-9, 2.0, 17)?),
            &["direction"],
        )?;
        reg(Box::new(conversion.clone()))?;
        let messages = IntCounterVec::new(
            Opts::new(
                "wsnorm_messages_total",
                "Data messages relayed, by direction and kind (json, text, binary).",
            ),
            &["direction", "kind"],
        )?;
        reg(Box::new(messages.clone()))?;
        let message_bytes = IntCounterVec::new(
            Opts::new(
                "wsnorm_message_bytes_total",
                "Payload bytes of data messages received, by direction.",
            ),
            &["direction"],
        )?;
        reg(Box::new(message_bytes.clone()))?;
        let rewrites = IntCounterVec::new(
            Opts::new(
                "wsnorm_rewrites_total",
                "Rule applications by rule, direction and result (rewritten, unchanged, invalid, rejected, too_large).",
            ),
            &["rule", "direction", "result"],
        )?;
        reg(Box::new(rewrites.clone()))?;
        let timestamp_inputs = IntCounterVec::new(
            Opts::new(
                "wsnorm_timestamp_inputs_total",
                "Timestamp values seen by timestamp rules, by detected input format.",
            ),
            &["format"],
        )?;
        reg(Box::new(timestamp_inputs.clone()))?;
        let unparsed = IntCounterVec::new(
            Opts::new(
                "wsnorm_unparsed_messages_total",
                "Text messages of a direction with rules forwarded without the rules because they \
                 are not JSON, by direction and reason (invalid_json, too_deep, invalid_utf8).",
            ),
            &["direction", "reason"],
        )?;
        reg(Box::new(unparsed.clone()))?;
        let closes = IntCounterVec::new(
            Opts::new(
                "wsnorm_closes_total",
                "WebSocket closes by close code and initiator (client, upstream, proxy).",
            ),
            &["code", "initiator"],
        )?;
        reg(Box::new(closes.clone()))?;
        let connections_active = IntGauge::new(
            "wsnorm_connections_active",
            "WebSocket connections currently relayed.",
        )?;
        reg(Box::new(connections_active.clone()))?;
        let backend_up = IntGauge::new(
            "wsnorm_backend_up",
            "1 if the backend accepted a TCP connect at the last check (every 5 s), else 0.",
        )?;
        reg(Box::new(backend_up.clone()))?;
        let handshakes = IntCounterVec::new(
            Opts::new("wsnorm_handshakes_total", "WebSocket handshakes by result."),
            &["result"],
        )?;
        reg(Box::new(handshakes.clone()))?;
        let handshake_duration = Histogram::with_opts(
            HistogramOpts::new(
                "wsnorm_handshake_duration_seconds",
                "Time from the client's upgrade request to wsnorm's answer (backend handshake included).",
            )
            .buckets(prometheus::exponential_buckets(0.0005, 2.0, 16)?),
        )?;
        reg(Box::new(handshake_duration.clone()))?;
        let subprotocols = IntCounterVec::new(
            Opts::new(
                "wsnorm_subprotocols_total",
                "Subprotocols negotiated with clients (configured names only; `none` when none).",
            ),
            &["protocol"],
        )?;
        reg(Box::new(subprotocols.clone()))?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "wsnorm_http_requests_total",
                "Plain HTTP requests passed through, by response status class.",
            ),
            &["status_class"],
        )?;
        reg(Box::new(http_requests.clone()))?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "wsnorm_config_reloads_total",
                "Configuration reloads by result (ok, error).",
            ),
            &["result"],
        )?;
        reg(Box::new(config_reloads.clone()))?;
        let build_info = IntGaugeVec::new(
            Opts::new("wsnorm_build_info", "Always 1; the version is a label."),
            &["version"],
        )?;
        reg(Box::new(build_info.clone()))?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        // Make the series exist from the start, so rate() and alerts see zeros, not gaps.
        for r in HandshakeResult::ALL {
            handshakes.with_label_values(&[r.as_str()]);
        }
        for code in CLOSE_CODES {
            for who in [Initiator::Client, Initiator::Upstream, Initiator::Proxy] {
                closes.with_label_values(&[code, who.as_str()]);
            }
        }
        for result in ["ok", "error"] {
            config_reloads.with_label_values(&[result]);
        }
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            http_requests.with_label_values(&[class]);
        }
        subprotocols.with_label_values(&["none"]);

        let kinds = ["json", "text", "binary"];
        let wire = crate::wire_metrics::WireBytes::register(&registry)?;
        Ok(Metrics {
            conversion: Direction::ALL.map(|d| conversion.with_label_values(&[d.as_str()])),
            messages: Direction::ALL
                .map(|d| kinds.map(|k| messages.with_label_values(&[d.as_str(), k]))),
            message_bytes: Direction::ALL.map(|d| message_bytes.with_label_values(&[d.as_str()])),
            registry,
            rewrites,
            rule_counters: ArcSwap::default(),
            timestamp_inputs: TimestampFormat::ALL
                .map(|f| timestamp_inputs.with_label_values(&[f.as_str()])),
            unparsed: Direction::ALL.map(|d| {
                Unparsed::ALL.map(|r| unparsed.with_label_values(&[d.as_str(), r.as_str()]))
            }),
            closes,
            connections_active,
            backend_up,
            handshakes,
            handshake_duration,
            subprotocols,
            http_requests,
            config_reloads,
            wire,
        })
    }

    /// Pre-creates the series of configured subprotocols so they show zero before first use.
    pub fn register_subprotocols(&self, names: &[String]) {
        for name in names {
            self.subprotocols.with_label_values(&[name.as_str()]);
        }
    }

    /// Creates the per-rule series (so a rule that never fired still shows zero) and resolves
    /// them for the relay, which then counts a rule's result without label hashing.
    pub fn register_rules<'a>(&self, names: impl Iterator<Item = &'a str>) {
        let counters = names
            .map(|name| RuleCounters {
                name: name.into(),
                by_result: Direction::ALL.map(|dir| {
                    RuleResult::ALL.map(|r| {
                        self.rewrites
                            .with_label_values(&[name, dir.as_str(), r.as_str()])
                    })
                }),
            })
            .collect();
        self.rule_counters.store(Arc::new(counters));
    }

    pub fn message(&self, dir: Direction, kind: MessageKind, bytes: usize) {
        let d = dir_index(dir);
        self.messages[d][kind as usize].inc();
        self.message_bytes[d].inc_by(bytes as u64);
    }

    /// A later frame of a binary message relayed frame by frame.
    pub fn fragment(&self, dir: Direction, bytes: usize) {
        self.message_bytes[dir_index(dir)].inc_by(bytes as u64);
    }

    pub fn conversion(&self, dir: Direction, seconds: f64) {
        self.conversion[dir_index(dir)].observe(seconds);
    }

    pub fn close(&self, code: u16, initiator: Initiator) {
        self.closes
            .with_label_values(&[close_code_label(code), initiator.as_str()])
            .inc();
    }

    pub fn handshake(&self, result: HandshakeResult, seconds: f64) {
        self.handshakes.with_label_values(&[result.as_str()]).inc();
        self.handshake_duration.observe(seconds);
    }

    /// `protocol` must be a configured subprotocol name or `none`.
    pub fn subprotocol(&self, protocol: &str) {
        self.subprotocols.with_label_values(&[protocol]).inc();
    }

    pub fn http_request(&self, status: u16) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.http_requests.with_label_values(&[class]).inc();
    }

    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) =
            prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out)
        {
            tracing::error!(error = %e, "Encoding metrics failed.");
        }
        out
    }
}

/// One rule's `wsnorm_rewrites_total` children, by direction and result.
pub struct RuleCounters {
    name: Box<str>,
    by_result: [[IntCounter; 5]; 2],
}

/// Feeds one message's rule-engine observations into the counters.
pub struct RuleMetrics<'a> {
    metrics: &'a Metrics,
    rules: arc_swap::Guard<Arc<Vec<RuleCounters>>>,
}

impl<'a> RuleMetrics<'a> {
    pub fn new(metrics: &'a Metrics) -> RuleMetrics<'a> {
        RuleMetrics {
            metrics,
            rules: metrics.rule_counters.load(),
        }
    }
}

impl Observer for RuleMetrics<'_> {
    fn rule_result(&mut self, rule: &str, dir: Direction, result: RuleResult) {
        // A handful of rules: a scan is cheaper than hashing the labels.
        match self.rules.iter().find(|c| &*c.name == rule) {
            Some(c) => c.by_result[dir_index(dir)][result as usize].inc(),
            // Rules swapped in by a reload whose counters are not resolved yet.
            None => self
                .metrics
                .rewrites
                .with_label_values(&[rule, dir.as_str(), result.as_str()])
                .inc(),
        }
    }

    fn timestamp_input(&mut self, format: TimestampFormat) {
        self.metrics.timestamp_inputs[format as usize].inc();
    }

    fn unparsed(&mut self, dir: Direction, why: Unparsed) {
        self.metrics.unparsed[dir_index(dir)][why as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_outside_the_fixed_set_are_other() {
        let m = Metrics::new().unwrap();
        m.close(1011, Initiator::Upstream);
        m.close(4000, Initiator::Client);
        let text = m.encode();
        assert!(text.contains(r#"wsnorm_closes_total{code="1011",initiator="upstream"} 1"#));
        assert!(text.contains(r#"wsnorm_closes_total{code="other",initiator="client"} 1"#));
        assert!(!text.contains("4000"));
    }

    #[test]
    fn rule_results_land_on_their_own_series_before_and_after_a_reload() {
        let m = Metrics::new().unwrap();
        m.register_rules(["a", "b"].into_iter());
        let mut obs = RuleMetrics::new(&m);
        obs.rule_result("b", Direction::BackendToClient, RuleResult::Rejected);
        obs.timestamp_input(TimestampFormat::Millis);
        // A rule the resolved table does not know yet (a reload in between) still counts.
        obs.rule_result("c", Direction::ClientToBackend, RuleResult::Rewritten);
        let text = m.encode();
        assert!(text.contains(
            r#"wsnorm_rewrites_total{direction="backend_to_client",result="rejected",rule="b"} 1"#
        ));
        assert!(text.contains(
            r#"wsnorm_rewrites_total{direction="client_to_backend",result="rewritten",rule="c"} 1"#
        ));
        assert!(text.contains(r#"wsnorm_timestamp_inputs_total{format="millis"} 1"#));
        assert!(text.contains(
            r#"wsnorm_rewrites_total{direction="backend_to_client",result="rejected",rule="a"} 0"#
        ));
        // The arrays are indexed by discriminant.
        for (i, r) in RuleResult::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
        }
        for (i, f) in TimestampFormat::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i);
        }
        for (i, u) in Unparsed::ALL.into_iter().enumerate() {
            assert_eq!(u as usize, i);
        }
    }

    #[test]
    fn unparsed_messages_have_their_series() {
        let m = Metrics::new().unwrap();
        let text = m.encode();
        assert!(text.contains(
            r#"wsnorm_unparsed_messages_total{direction="client_to_backend",reason="too_deep"} 0"#
        ));
        RuleMetrics::new(&m).unparsed(Direction::BackendToClient, Unparsed::InvalidJson);
        let text = m.encode();
        assert!(text.contains(
            r#"wsnorm_unparsed_messages_total{direction="backend_to_client",reason="invalid_json"} 1"#
        ));
    }

    #[test]
    fn oversized_rewrites_have_their_series() {
        let m = Metrics::new().unwrap();
        m.register_rules(["a"].into_iter());
        let series =
            r#"wsnorm_rewrites_total{direction="client_to_backend",result="too_large",rule="a"}"#;
        assert!(m.encode().contains(&format!("{series} 0")));
        RuleMetrics::new(&m).rule_result("a", Direction::ClientToBackend, RuleResult::TooLarge);
        assert!(m.encode().contains(&format!("{series} 1")));
    }

    #[test]
    fn series_exist_before_any_traffic() {
        let m = Metrics::new().unwrap();
        let text = m.encode();
        assert!(text.contains(r#"wsnorm_handshakes_total{result="upstream_5xx"} 0"#));
        assert!(text.contains(r#"wsnorm_config_reloads_total{result="error"} 0"#));
        assert!(text.contains(r#"wsnorm_build_info{version=""#));
    }

    #[test]
    fn message_counters_split_by_direction_and_kind() {
        let m = Metrics::new().unwrap();
        m.message(Direction::BackendToClient, MessageKind::Binary, 10);
        m.message(Direction::BackendToClient, MessageKind::Binary, 5);
        let text = m.encode();
        assert!(text
            .contains(r#"wsnorm_messages_total{direction="backend_to_client",kind="binary"} 2"#));
        assert!(text.contains(r#"wsnorm_message_bytes_total{direction="backend_to_client"} 15"#));
    }
}
