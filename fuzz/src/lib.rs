//! What the fuzz targets check, shared by `fuzz_targets/*.rs`.
//!
//! * [`rules_apply`]: the first input byte picks the direction (and the clock), the rest is a
//!   WebSocket text message. It is run through the default rules and a rich rule set (every
//!   `on_invalid` policy and output form, wildcards, nested and escaped paths, `types`
//!   filters, every epoch unit, a rename), both reading strict JSON at most 128 deep, as
//!   serde_json does. Checked: no panic; `NotJson` exactly when the message is not UTF-8, not
//!   JSON (serde_json) or nested deeper than 128; `Rewritten` output is valid JSON and differs
//!   from the input; a `Rejected` or `TooLarge` reply is valid JSON.
//! * [`config_parse`]: the input as a TOML file through `Config::from_toml`. Checked: no
//!   panic; errors name the file; an accepted config describes itself and applies its rules.

use std::sync::OnceLock;

use serde::de::IgnoredAny;
use wsnorm::config::{Config, Overrides};
use wsnorm_testkit::oracle::nesting_depth;
use wsnorm::rules::{
    default_rules, CompiledRules, Direction, EngineSettings, JsonDialect, Outcome, UnixTime,
};

/// Every `on_invalid` policy with every output form (rejecting rules last).
pub const RICH_RULES_TOML: &str = r#"
[websocket]
json_dialect = "strict"
max_json_depth = 128

[[rules]]
name = "aliases"
kind = "rename"
direction = "both"
paths = ["type", "payload.kind", "items.*.type", "*.type"]
map = { execute_agent = "start_agent", EXECUTE_AGENT = "start_agent", "é" = "e\"\\\n", "" = "empty" }

[[rules]]
name = "now-seconds"
kind = "timestamp"
direction = "client_to_backend"
paths = ["timestamp", "payload.timestamp"]
types = ["start_agent"]

[[rules]]
name = "now-millis"
kind = "timestamp"
direction = "backend_to_client"
paths = ["*.ts", "items.*.ts", "ts"]
output = "unix_millis"
naive_timezone = "+02:00"
epoch_unit = "seconds"

[[rules]]
name = "now-rfc3339"
kind = "timestamp"
direction = "both"
paths = ["items.*", "times.*"]
output = "rfc3339"
naive_timezone = "-07:30"
epoch_unit = "millis"

[[rules]]
name = "keep-seconds"
kind = "timestamp"
direction = "client_to_backend"
paths = ["*.*.created_at", 'a\.b', "created_at"]
epoch_unit = "micros"
on_invalid = "keep"

[[rules]]
name = "keep-millis"
kind = "timestamp"
direction = "backend_to_client"
paths = ['\*', "0", "1.ts"]
output = "unix_millis"
epoch_unit = "nanos"
on_invalid = "keep"
types = ["chat", "execute_agent"]

[[rules]]
name = "keep-rfc3339"
kind = "timestamp"
direction = "both"
paths = ["payload.*", "meta.1.ts", "*.*.*"]
output = "rfc3339"
on_invalid = "keep"

[[rules]]
name = "remove-seconds"
kind = "timestamp"
direction = "both"
paths = ["*"]
naive_timezone = "+23:59"
on_invalid = "remove"

[[rules]]
name = "remove-millis"
kind = "timestamp"
direction = "client_to_backend"
paths = ["times.1", "items.0.ts", "payload.timestamp"]
output = "unix_millis"
naive_timezone = "-0530"
on_invalid = "remove"

[[rules]]
name = "remove-rfc3339"
kind = "timestamp"
direction = "backend_to_client"
paths = ["timestamp", "*.ts"]
output = "rfc3339"
naive_timezone = "+05"
epoch_unit = "seconds"
on_invalid = "remove"

[[rules]]
name = "reject-seconds"
kind = "timestamp"
direction = "both"
paths = ["ts", "payload.*.created_at"]
types = ["start_agent", "chat"]
on_invalid = "reject"

[[rules]]
name = "reject-millis"
kind = "timestamp"
direction = "client_to_backend"
paths = ["items.*.ts", "meta.ts"]
output = "unix_millis"
on_invalid = "reject"

[[rules]]
name = "reject-rfc3339"
kind = "timestamp"
direction = "backend_to_client"
paths = ["*.*"]
output = "rfc3339"
epoch_unit = "auto"
on_invalid = "reject"
"#;

/// The default rules and the rich rule set, compiled once.
pub fn rule_sets() -> &'static [CompiledRules; 2] {
    static SETS: OnceLock<[CompiledRules; 2]> = OnceLock::new();
    SETS.get_or_init(|| {
        let rich = Config::from_toml("<rich rules>", RICH_RULES_TOML, &Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .rules;
        [
            CompiledRules::compile_with(
                &default_rules(),
                EngineSettings {
                    json_dialect: JsonDialect::Strict,
                    max_json_depth: 128,
                    ..EngineSettings::default()
                },
            )
            .expect("default rules compile"),
            rich,
        ]
    })
}

/// Is `msg` something the engine must classify as `NotJson`?
fn not_json(msg: &[u8]) -> bool {
    match std::str::from_utf8(msg) {
        Err(_) => true,
        Ok(s) => serde_json::from_str::<IgnoredAny>(s).is_err() || nesting_depth(msg) > 128,
    }
}

fn is_json(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok_and(|s| serde_json::from_str::<IgnoredAny>(s).is_ok())
}

/// The `rules_apply` target.
pub fn rules_apply(data: &[u8]) {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let dir = Direction::ALL[usize::from(sel & 1)];
    // The clock matters for on_invalid = "now" and reject replies: vary it a little,
    // including before 1970 and far in the future.
    let now = match sel >> 1 & 3 {
        0 => UnixTime {
            secs: 1_757_350_201,
            nanos: 447_585_123,
        },
        1 => UnixTime { secs: -1, nanos: 1 },
        2 => UnixTime {
            secs: 253_402_300_800, // year 10000: not writable as RFC 3339
            nanos: 0,
        },
        _ => UnixTime {
            secs: 0,
            nanos: 2_500_000_000, // not normalized
        },
    };
    let invalid = not_json(msg);
    for rules in rule_sets() {
        let outcome = rules.apply(dir, msg, now, &mut ());
        if !rules.applies_to(dir) {
            assert_eq!(outcome, Outcome::Unchanged);
            continue;
        }
        match &outcome {
            Outcome::NotJson => assert!(invalid, "valid JSON classified NotJson"),
            _ => assert!(!invalid, "invalid input classified {outcome:?}"),
        }
        match &outcome {
            Outcome::Rewritten(out) => {
                assert_ne!(&out[..], msg, "Rewritten with identical bytes");
                assert!(
                    is_json(out),
                    "Rewritten output is not JSON: {:?}",
                    String::from_utf8_lossy(out)
                );
            }
            Outcome::Rejected { reply, .. } | Outcome::TooLarge { reply, .. } => assert!(
                is_json(reply),
                "reply is not JSON: {:?}",
                String::from_utf8_lossy(reply)
            ),
            Outcome::NotJson | Outcome::Unchanged => {}
        }
    }
}

/// The `config_parse` target.
pub fn config_parse(data: &[u8]) {
    const FILE: &str = "fuzz/wsnorm.toml";
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(FILE, text, &Overrides::default()) {
        Ok(cfg) => {
            let _ = cfg.describe();
            let msg = br#"{"type":"execute_agent","timestamp":"2025-09-08T16:50:01.447585","payload":{"timestamp":"x"}}"#;
            for dir in Direction::ALL {
                let _ = cfg.rules.apply(dir, msg, UnixTime::now(), &mut ());
            }
        }
        Err(e) => {
            let s = e.to_string();
            assert!(
                s.starts_with(&format!("{FILE}: ")),
                "error does not name the file: {s}"
            );
        }
    }
}
