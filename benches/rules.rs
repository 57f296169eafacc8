//! Rule engine benchmarks (criterion): `cargo bench --bench rules`.
//!
//! Each group puts wsnorm's `CompiledRules::apply` (default rules, client -> backend) beside the
//! baseline of the performance goal: a plain `serde_json::from_slice::<Value>` + `to_vec` of the
//! same bytes. Goal: apply <= 0.5x the baseline on the ~256 B message. A separate group times one
//! timestamp conversion (goal <= 100 ns; the backend's Python takes ~1.4 us). The `_cold` group
//! runs the 256 B message with the caches emptied before each run, as the proxy meets it when
//! the kernel's network path ran in between (not a goal: it shows what the hot loop hides).
//!
//! The `permessage_deflate` group puts the same message's inflating beside it, as a browser
//! compresses it (zlib's default level, each message on its own) and wsnorm reads it from a
//! compressed client leg (`relay::deflate::Inflater`, the pooled stream), and its deflating at
//! wsnorm's default level (the backend's leg with `compress_to_backend`).
//!
//! `cargo bench --bench rules -- --test` runs every benchmark once (a few seconds), for CI.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use serde_json::Value;
use wsnorm::relay::deflate::{Deflater, Inflater, Window};
use wsnorm::rules::timestamp::{convert_timestamp, write_unix_seconds, TimestampInput};
use wsnorm::rules::{
    default_rules, CompiledRules, Direction, EpochUnit, LeapSecond, NaiveTimezone, Outcome,
    UnixTime,
};

/// The incident message, ~256 B, as `wsnorm-load` sends it: both default rules rewrite it.
const MATCHING: &str = concat!(
    r#"{"type":"execute_agent","payload":{"user_request":"why is p99 up on checkout since the deploy?","#,
    r#""thread_id":"t-7f3a9c","run_id":"r-2b41e0","context":{},"settings":{}},"#,
    r#""timestamp":"2025-09-08T16:50:01.447585","message_id":"m-0000000042","user_id":"abcd1234"}"#
);

/// The same message as the backend wants it: nothing to rewrite.
const NON_MATCHING: &str = concat!(
    r#"{"type":"start_agent","payload":{"user_request":"why is p99 up on checkout since the deploy?","#,
    r#""thread_id":"t-7f3a9c","run_id":"r-2b41e0","context":{},"settings":{}},"#,
    r#""timestamp":1757350201.447585,"message_id":"m-0000000042","user_id":"abcd1234"}"#
);

/// A ~64 KiB `execute_agent` with a long conversation history in its payload and the ISO
/// timestamp after it (the engine has to get past the payload to find it).
fn large_message() -> String {
    let mut history = Vec::new();
    let mut len = 0;
    let mut i = 0u32;
    while len < 63 * 1024 {
        let entry = format!(
            r#"{{"role":"{}","content":"step {i}: checked the checkout service's p99 latency, the deploy diff and the connection pool metrics \u00e9 \"quoted\"","timestamp":"2025-09-08T16:{:02}:{:02}.{:06}","tokens":{}}}"#,
            if i.is_multiple_of(2) {
                "user"
            } else {
                "assistant"
            },
            (i / 60) % 60,
            i % 60,
            (i * 7919) % 1_000_000,
            100 + i % 900,
        );
        len += entry.len() + 1;
        history.push(entry);
        i += 1;
    }
    format!(
        r#"{{"type":"execute_agent","payload":{{"user_request":"summarise","thread_id":"t1","history":[{}],"settings":{{"temperature":0.2,"max_tokens":4096}}}},"timestamp":"2025-09-08T16:50:01.447585","message_id":"m-big"}}"#,
        history.join(",")
    )
}

fn now() -> UnixTime {
    UnixTime {
        secs: 1_757_350_300,
        nanos: 0,
    }
}

fn serde_roundtrip(bytes: &[u8]) -> Vec<u8> {
    let v: Value = serde_json::from_slice(bytes).expect("bench input is JSON");
    serde_json::to_vec(&v).expect("a Value serializes")
}

fn compare_group(c: &mut Criterion, rules: &CompiledRules, name: &str, msg: &str, rewrites: bool) {
    // Check the inputs do what the group name says before timing them.
    let outcome = rules.apply(Direction::ClientToBackend, msg.as_bytes(), now(), &mut ());
    match (&outcome, rewrites) {
        (Outcome::Rewritten(out), true) => {
            let text = std::str::from_utf8(out).expect("UTF-8 out");
            assert!(text.contains(r#""type":"start_agent""#), "{text}");
            assert!(text.contains(r#""timestamp":1757350201.447585"#), "{text}");
        }
        (Outcome::Unchanged, false) => {}
        (other, _) => panic!("{name}: unexpected outcome {other:?}"),
    }

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(msg.len() as u64));
    group.bench_function(BenchmarkId::new("wsnorm_apply", msg.len()), |b| {
        b.iter(|| {
            rules.apply(
                Direction::ClientToBackend,
                black_box(msg.as_bytes()),
                black_box(now()),
                &mut (),
            )
        })
    });
    group.bench_function(
        BenchmarkId::new("serde_value_parse_to_vec", msg.len()),
        |b| b.iter(|| serde_roundtrip(black_box(msg.as_bytes()))),
    );
    group.finish();
}

/// Bytes written between two cold runs: more than the L2 caches hold.
const EVICT_BYTES: usize = 8 << 20;

/// The 256 B message as the proxy meets it at K=1: between two messages the kernel's network
/// path runs, and the engine's code and data have left the caches. Before each timed run
/// (untimed), a buffer larger than the caches is written over.
fn cold_group(c: &mut Criterion, rules: &CompiledRules) {
    let mut evict = vec![0u8; EVICT_BYTES];
    let mut thrash = move || {
        for (i, byte) in evict.iter_mut().enumerate().step_by(64) {
            *byte = byte.wrapping_add(i as u8);
        }
        black_box(evict.as_ptr());
    };
    let mut group = c.benchmark_group("agent_chat_256B_rewritten_cold");
    group.bench_function(BenchmarkId::new("wsnorm_apply", MATCHING.len()), |b| {
        b.iter_batched(
            &mut thrash,
            |()| {
                rules.apply(
                    Direction::ClientToBackend,
                    black_box(MATCHING.as_bytes()),
                    now(),
                    &mut (),
                )
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function(
        BenchmarkId::new("serde_value_parse_to_vec", MATCHING.len()),
        |b| {
            b.iter_batched(
                &mut thrash,
                |()| serde_roundtrip(black_box(MATCHING.as_bytes())),
                BatchSize::PerIteration,
            )
        },
    );
    group.finish();
}

fn messages(c: &mut Criterion) {
    let rules = CompiledRules::compile(&default_rules()).expect("default rules compile");
    compare_group(c, &rules, "agent_chat_256B_rewritten", MATCHING, true);
    cold_group(c, &rules);
    compare_group(c, &rules, "agent_chat_256B_unchanged", NON_MATCHING, false);
    let large = large_message();
    compare_group(c, &rules, "agent_chat_64KiB_rewritten", &large, true);
}

fn timestamps(c: &mut Criterion) {
    let mut group = c.benchmark_group("timestamp");
    let utc = NaiveTimezone::UTC;
    let cases: [(&str, TimestampInput<'static>); 3] = [
        (
            "iso_naive",
            TimestampInput::Str("2025-09-08T16:50:01.447585"),
        ),
        ("iso_z", TimestampInput::Str("2025-09-08T16:50:01.447Z")),
        ("numeric_millis", TimestampInput::Number("1757350201447")),
    ];
    for (name, input) in cases {
        convert_timestamp(input, utc, LeapSecond::Reject, EpochUnit::Auto)
            .expect("valid bench timestamp");
        group.bench_function(BenchmarkId::new("convert", name), |b| {
            b.iter(|| convert_timestamp(black_box(input), utc, LeapSecond::Reject, EpochUnit::Auto))
        });
    }
    // ISO string -> the Unix float's text, as the rule writes it (parse + format).
    let mut out = Vec::with_capacity(32);
    group.bench_function(BenchmarkId::new("convert_and_format", "iso_naive"), |b| {
        b.iter(|| {
            out.clear();
            if let Ok(p) = convert_timestamp(
                black_box(TimestampInput::Str("2025-09-08T16:50:01.447585")),
                utc,
                LeapSecond::Reject,
                EpochUnit::Auto,
            ) {
                write_unix_seconds(p.time, &mut out);
            }
            black_box(out.len())
        })
    });
    group.finish();
}

fn permessage_deflate(c: &mut Criterion) {
    let fresh = Window {
        bits: 15,
        no_context_takeover: true,
    };
    let mut compressed = Vec::new();
    Deflater::new(fresh, 6)
        .compress(MATCHING.as_bytes(), true, &mut compressed)
        .expect("the message compresses");
    let mut inflater = Inflater::new(fresh);
    let mut out = Vec::with_capacity(4096);
    let mut inflate = |out: &mut Vec<u8>| {
        out.clear();
        inflater
            .inflate(black_box(&compressed), true, out, 1 << 20)
            .expect("the message inflates");
    };
    inflate(&mut out);
    assert_eq!(out, MATCHING.as_bytes());
    let mut group = c.benchmark_group("permessage_deflate");
    group.throughput(Throughput::Bytes(MATCHING.len() as u64));
    group.bench_function(BenchmarkId::new("inflate", compressed.len()), |b| {
        b.iter(|| inflate(&mut out))
    });
    let mut deflater = Deflater::new(fresh, 7);
    group.bench_function(BenchmarkId::new("deflate_level_7", MATCHING.len()), |b| {
        b.iter(|| {
            out.clear();
            deflater
                .compress(black_box(MATCHING.as_bytes()), true, &mut out)
                .expect("the message compresses");
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = config();
    targets = messages, timestamps, permessage_deflate
}
criterion_main!(benches);
