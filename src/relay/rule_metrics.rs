//! The rules bridge's metrics: what each rule did, the timestamp formats seen, text the rules
//! could not read, and how long they took. Fed by the engine's [`Observer`] calls.

use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};

use crate::metrics::{counter_vec, histogram_vec};
use crate::rules::{Direction, Observer, RuleResult, TimestampFormat, Unparsed};

pub struct RuleMetrics {
    conversion: [Histogram; 2],
    rewrites: IntCounterVec,
    /// The current rules' `rewrites` children, in rule order, resolved when rules are loaded.
    rule_counters: ArcSwap<Vec<RuleCounters>>,
    /// Indexed like [`TimestampFormat::ALL`].
    timestamp_inputs: [IntCounter; 8],
    /// By direction, then indexed like [`Unparsed::ALL`].
    unparsed: [[IntCounter; 3]; 2],
}

impl RuleMetrics {
    pub fn register(reg: &mut Registry) -> Result<RuleMetrics, prometheus::Error> {
        let conversion = histogram_vec(
            reg,
            "wsnorm_conversion_duration_seconds",
            "Time to apply the rewrite rules to one JSON message.",
            &["direction"],
            // 250 ns .. 16 ms: sub-microsecond rules up to pathological messages.
            prometheus::exponential_buckets(250e-9, 2.0, 17)?,
        )?;
        let rewrites = counter_vec(
            reg,
            "wsnorm_rewrites_total",
            "Rule applications by rule, direction and result (rewritten, unchanged, invalid, rejected, too_large).",
            &["rule", "direction", "result"],
        )?;
        let timestamp_inputs = counter_vec(
            reg,
            "wsnorm_timestamp_inputs_total",
            "Timestamp values seen by timestamp rules, by detected input format.",
            &["format"],
        )?;
        let unparsed = counter_vec(
            reg,
            "wsnorm_unparsed_messages_total",
            "Text messages of a direction with rules forwarded without the rules because they \
             are not JSON, by direction and reason (invalid_json, too_deep, invalid_utf8).",
            &["direction", "reason"],
        )?;
        Ok(RuleMetrics {
            conversion: Direction::ALL.map(|d| conversion.with_label_values(&[d.as_str()])),
            rewrites,
            rule_counters: ArcSwap::default(),
            timestamp_inputs: TimestampFormat::ALL
                .map(|f| timestamp_inputs.with_label_values(&[f.as_str()])),
            unparsed: Direction::ALL.map(|d| {
                Unparsed::ALL.map(|r| unparsed.with_label_values(&[d.as_str(), r.as_str()]))
            }),
        })
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

    pub fn conversion(&self, dir: Direction, seconds: f64) {
        self.conversion[dir.index()].observe(seconds);
    }

    /// The observer of one message's pass through the rules.
    pub fn observer(&self) -> RuleObserver<'_> {
        RuleObserver {
            metrics: self,
            rules: self.rule_counters.load(),
        }
    }
}

/// One rule's `wsnorm_rewrites_total` children, by direction and result.
struct RuleCounters {
    name: Box<str>,
    by_result: [[IntCounter; 5]; 2],
}

/// Feeds one message's rule-engine observations into the counters.
pub struct RuleObserver<'a> {
    metrics: &'a RuleMetrics,
    rules: arc_swap::Guard<Arc<Vec<RuleCounters>>>,
}

impl Observer for RuleObserver<'_> {
    fn rule_result(&mut self, rule: &str, dir: Direction, result: RuleResult) {
        // A handful of rules: a scan is cheaper than hashing the labels.
        match self.rules.iter().find(|c| &*c.name == rule) {
            Some(c) => c.by_result[dir.index()][result as usize].inc(),
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
        self.metrics.unparsed[dir.index()][why as usize].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode;

    fn metrics() -> (Registry, RuleMetrics) {
        let mut reg = Registry::new();
        let m = RuleMetrics::register(&mut reg).unwrap();
        (reg, m)
    }

    #[test]
    fn rule_results_land_on_their_own_series_before_and_after_a_reload() {
        let (reg, m) = metrics();
        m.register_rules(["a", "b"].into_iter());
        let mut obs = m.observer();
        obs.rule_result("b", Direction::BackendToClient, RuleResult::Rejected);
        obs.timestamp_input(TimestampFormat::Millis);
        // A rule the resolved table does not know yet (a reload in between) still counts.
        obs.rule_result("c", Direction::ClientToBackend, RuleResult::Rewritten);
        let text = encode(&reg);
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
        for (i, d) in Direction::ALL.into_iter().enumerate() {
            assert_eq!(d.index(), i);
        }
    }

    #[test]
    fn unparsed_messages_have_their_series() {
        let (reg, m) = metrics();
        assert!(encode(&reg).contains(
            r#"wsnorm_unparsed_messages_total{direction="client_to_backend",reason="too_deep"} 0"#
        ));
        m.observer()
            .unparsed(Direction::BackendToClient, Unparsed::InvalidJson);
        assert!(encode(&reg).contains(
            r#"wsnorm_unparsed_messages_total{direction="backend_to_client",reason="invalid_json"} 1"#
        ));
    }

    #[test]
    fn oversized_rewrites_have_their_series() {
        let (reg, m) = metrics();
        m.register_rules(["a"].into_iter());
        let series =
            r#"wsnorm_rewrites_total{direction="client_to_backend",result="too_large",rule="a"}"#;
        assert!(encode(&reg).contains(&format!("{series} 0")));
        m.observer()
            .rule_result("a", Direction::ClientToBackend, RuleResult::TooLarge);
        assert!(encode(&reg).contains(&format!("{series} 1")));
    }
}
