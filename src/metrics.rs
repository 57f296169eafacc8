//! Prometheus metrics: one [`Registry`] for the whole process, served by the admin listener.
//! Each area registers its own families and owns its label types: the front door
//! ([`crate::proxy::metrics`]), the relay ([`crate::relay::metrics`]), the rules bridge
//! ([`crate::relay::rule_metrics`]) and config reloads ([`crate::reload::ConfigMetrics`]); this
//! module assembles them, adds the process collector and the build info, and encodes.
//!
//! Labels are bounded: directions, kinds, results and close codes come from fixed sets, rule
//! names and route patterns from the config file. Never a user, a path or a connection id.

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::config::Config;
use crate::proxy::metrics::ProxyMetrics;
use crate::relay::metrics::RelayMetrics;
use crate::relay::rule_metrics::RuleMetrics;
use crate::reload::ConfigMetrics;

/// Every wsnorm metric, by area.
pub struct Metrics {
    registry: Registry,
    pub proxy: ProxyMetrics,
    pub relay: RelayMetrics,
    pub rules: RuleMetrics,
    pub config: ConfigMetrics,
}

impl Metrics {
    /// Creates and registers all metrics. Fails only on a programming error (duplicate names).
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let mut registry = Registry::new();
        // Memory, CPU, open descriptors and start time of this process, as every exporter names
        // them (`process_resident_memory_bytes`, ...).
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        gauge_vec(
            &mut registry,
            "wsnorm_build_info",
            "Always 1; the version is a label.",
            &["version"],
        )?
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        Ok(Metrics {
            proxy: ProxyMetrics::register(&mut registry)?,
            relay: RelayMetrics::register(&mut registry)?,
            rules: RuleMetrics::register(&mut registry)?,
            config: ConfigMetrics::register(&mut registry)?,
            registry,
        })
    }

    /// Creates the series a newly loaded config names (its rules, subprotocols and routes), so
    /// they show zero before first use, and records which config is live.
    pub fn config_loaded(&self, config: &Config) {
        let routes = config.routes.patterns();
        self.rules.register_rules(config.rules.rule_names());
        self.proxy
            .register_config(&config.websocket.subprotocols, &routes);
        self.relay.register_routes(&routes);
        self.config.loaded(config);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// The text exposition of `registry`.
pub(crate) fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut out) {
        tracing::error!(error = %e, "Encoding metrics failed.");
    }
    out
}

/// Registers `collector` and hands it back for use.
fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

pub(crate) fn counter_vec(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

pub(crate) fn gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Result<IntGauge, prometheus::Error> {
    register(registry, IntGauge::new(name, help)?)
}

pub(crate) fn gauge_vec(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

pub(crate) fn float_gauge(
    registry: &mut Registry,
    name: &str,
    help: &str,
) -> Result<prometheus::Gauge, prometheus::Error> {
    register(registry, prometheus::Gauge::new(name, help)?)
}

pub(crate) fn histogram(
    registry: &mut Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> Result<Histogram, prometheus::Error> {
    register(
        registry,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?,
    )
}

pub(crate) fn histogram_vec(
    registry: &mut Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Result<HistogramVec, prometheus::Error> {
    register(
        registry,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    #[test]
    fn series_exist_before_any_traffic() {
        let m = Metrics::new().unwrap();
        let config = Config::from_toml("t.toml", "", &Overrides::default()).unwrap();
        m.config_loaded(&config);
        let text = m.encode();
        assert!(text.contains(r#"wsnorm_handshakes_total{result="backend_5xx",route="/ws"} 0"#));
        assert!(text.contains(r#"wsnorm_config_reloads_total{result="error"} 0"#));
        assert!(text.contains(r#"wsnorm_build_info{version=""#));
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_open_fds "));
    }
}
