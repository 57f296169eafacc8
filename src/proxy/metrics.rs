//! The front door's metrics: handshakes, the backend, plain HTTP requests.

use prometheus::{Histogram, HistogramVec, IntCounterVec, IntGauge, Registry};

use crate::metrics::{counter_vec, gauge, histogram, histogram_vec};

/// How a WebSocket handshake ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    Backend4xx,
    Backend5xx,
    ConnectError,
    Timeout,
    BadRequest,
    NoCommonSubprotocol,
    Overloaded,
    /// The backend answered something that is not a valid WebSocket handshake.
    BackendInvalid,
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
        HandshakeResult::Backend4xx,
        HandshakeResult::Backend5xx,
        HandshakeResult::ConnectError,
        HandshakeResult::Timeout,
        HandshakeResult::BadRequest,
        HandshakeResult::NoCommonSubprotocol,
        HandshakeResult::Overloaded,
        HandshakeResult::BackendInvalid,
        HandshakeResult::InvalidToken,
        HandshakeResult::OriginRejected,
        HandshakeResult::BadPath,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Backend4xx => "backend_4xx",
            HandshakeResult::Backend5xx => "backend_5xx",
            HandshakeResult::ConnectError => "connect_error",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::BadRequest => "bad_request",
            HandshakeResult::NoCommonSubprotocol => "no_common_subprotocol",
            HandshakeResult::Overloaded => "overloaded",
            HandshakeResult::BackendInvalid => "backend_invalid",
            HandshakeResult::InvalidToken => "invalid_token",
            HandshakeResult::OriginRejected => "origin_rejected",
            HandshakeResult::BadPath => "bad_path",
        }
    }
}

/// The `status_class` label of an HTTP status.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct ProxyMetrics {
    handshakes: IntCounterVec,
    handshake_duration: HistogramVec,
    backend_connect_duration: Histogram,
    /// 1 when the last backend check connected, 0 when it failed.
    pub backend_up: IntGauge,
    subprotocols: IntCounterVec,
    http_requests: IntCounterVec,
    http_request_duration: HistogramVec,
}

impl ProxyMetrics {
    pub fn register(reg: &mut Registry) -> Result<ProxyMetrics, prometheus::Error> {
        let m = ProxyMetrics {
            handshakes: counter_vec(
                reg,
                "wsnorm_handshakes_total",
                "WebSocket handshakes by route (configured pattern) and result.",
                &["route", "result"],
            )?,
            handshake_duration: histogram_vec(
                reg,
                "wsnorm_handshake_duration_seconds",
                "Time from the client's upgrade request to wsnorm's answer (backend handshake included), by route.",
                &["route"],
                prometheus::exponential_buckets(0.0005, 2.0, 16)?,
            )?,
            backend_connect_duration: histogram(
                reg,
                "wsnorm_backend_connect_duration_seconds",
                "Time to open the TCP connection to the backend for a WebSocket.",
                // 50 µs (loopback) .. 1.6 s.
                prometheus::exponential_buckets(50e-6, 2.0, 16)?,
            )?,
            backend_up: gauge(
                reg,
                "wsnorm_backend_up",
                "1 if the backend accepted a TCP connect at the last check (every 5 s), else 0.",
            )?,
            subprotocols: counter_vec(
                reg,
                "wsnorm_subprotocols_total",
                "Subprotocols negotiated with clients (configured names only; `none` when none).",
                &["protocol"],
            )?,
            http_requests: counter_vec(
                reg,
                "wsnorm_http_requests_total",
                "Plain HTTP requests passed through, by response status class.",
                &["status_class"],
            )?,
            http_request_duration: histogram_vec(
                reg,
                "wsnorm_http_request_duration_seconds",
                "Time from a plain HTTP request's head to the end of its response, by status class.",
                &["status_class"],
                prometheus::exponential_buckets(0.0005, 2.0, 16)?,
            )?,
        };
        // Make the series exist from the start, so rate() and alerts see zeros, not gaps.
        for class in STATUS_CLASSES {
            m.http_requests.with_label_values(&[class]);
        }
        m.subprotocols.with_label_values(&["none"]);
        Ok(m)
    }

    /// Creates the series of configured subprotocols and routes.
    pub fn register_config(&self, subprotocols: &[String], routes: &[&str]) {
        for name in subprotocols {
            self.subprotocols.with_label_values(&[name.as_str()]);
        }
        for route in routes {
            for r in HandshakeResult::ALL {
                self.handshakes.with_label_values(&[route, r.as_str()]);
            }
            self.handshake_duration.with_label_values(&[route]);
        }
    }

    /// `route` must be a configured pattern or [`crate::config::UNROUTED`].
    pub fn handshake(&self, route: &str, result: HandshakeResult, seconds: f64) {
        self.handshakes
            .with_label_values(&[route, result.as_str()])
            .inc();
        self.handshake_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    pub fn backend_connect(&self, seconds: f64) {
        self.backend_connect_duration.observe(seconds);
    }

    /// `protocol` must be a configured subprotocol name or `none`.
    pub fn subprotocol(&self, protocol: &str) {
        self.subprotocols.with_label_values(&[protocol]).inc();
    }

    pub fn http_request(&self, status: u16, seconds: f64) {
        let class = status_class(status);
        self.http_requests.with_label_values(&[class]).inc();
        self.http_request_duration
            .with_label_values(&[class])
            .observe(seconds);
    }
}
