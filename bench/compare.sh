#!/usr/bin/env bash
# Side-by-side performance comparison: the echo backend directly, nginx 1.22 and HAProxy 2.6 as
# pass-through WebSocket proxies, and wsnorm (threads = 1, default rules rewriting every
# message), all in one run; also wsnorm with no rules ("no_rules"), so the run shows what the
# rewriting itself costs, and a plain tokio TCP relay ("tcp_relay", `wsnorm-load relay`): what a
# proxy on tokio costs before it looks at a frame.
#
#   bench/compare.sh [--quick] [--rounds N] [--long-lived] [--idle-conns "5000 9000"]
#     [--burst N] [--paced-conns N] [--paced-rate R] [--paced-secs S] [--out FILE] [--no-build]
#   wsnorm is built and measured as shipped: scripts/build-pgo.sh (`dist`, fat LTO, PGO),
#   target/pgo/wsnorm; the load tool and echo backend from `cargo build --profile dist`.
#   (WSNORM_BIN=/path/to/wsnorm compares another build of wsnorm, e.g. target/dist/wsnorm
#   without PGO or a candidate fix; LOAD_BIN=/path/to/wsnorm-load another load tool;
#   M1, M16: round trips per connection at K=1 and K=16, default 2000 and 5000)
#
# The proxy under test runs on CPU 0 (taskset -c 0); the load generator and the echo backend
# (both `wsnorm-load`, single-threaded) on CPU 1. nginx: 1 worker; HAProxy: nbthread 1,
# `mode http`, `timeout tunnel` 1 h. Measured:
#   * ping-pong, 50 connections, 1 message in flight, then 16 in flight per connection, every
#     target: round trips/s, p50/p99 latency, and the proxy's CPU time per round trip
#     (utime+stime from /proc/PID/stat over the measured window, ticks -> us via CLK_TCK; for
#     nginx master+worker);
#   * paced, nginx, HAProxy and wsnorm: --paced-conns connections (default 2,000) each sending
#     on its own timer, --paced-rate messages/s in total (default 10,000) for --paced-secs
#     (default 10) after 2 s of warm-up: achieved rate, p50/p99, proxy CPU per message. The
#     proxies sleep between messages, as in front of a chat backend;
#   * rounds (--rounds, default 5) are interleaved: at each K direct, then the proxies back to
#     back, then the paced runs, the proxies' order reversed every round; medians are reported,
#     and ratios per round. Every round starts the proxies afresh, unless --long-lived: then
#     one process each serves the whole run, idle measurements included (which then reuse
#     memory the rounds freed, so their per-connection figures are not the goals' fresh ones);
#   * idle memory, nginx, HAProxy and wsnorm, for each count of --idle-conns (default 5,000
#     and 9,000; fresh processes for each unless --long-lived): VmRSS of the proxy (nginx:
#     master+worker) before opening the connections, once they are open, after one message on
#     each, and after a burst on each (--burst messages of 64 KiB written at once, default 4;
#     256 connections at a time; 0: none) and 12 s of quiet, each per connection.
# Each proxied connection takes two descriptors in the proxy: 9,000 connections need 18,000,
# and the hard limit (ulimit -Hn) must allow that; the load tool and the echo backend hold one
# per connection under the same limit.
# Prints tables with the ratios wsnorm/nginx and wsnorm/HAProxy and writes a JSON result file
# (default target/bench-results/compare-DATE.json, outside git). --quick: 1 round, fewer round
# trips, 1,000 idle connections (unless --idle-conns), 300 paced connections for 3 s.
# Everything is on 127.0.0.1, every wait is bounded, and every process started is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh

quick=0
rounds=5
long_lived=0
idle_list=""
burst=4
paced_conns=""
paced_rate=10000
paced_secs=""
out=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --long-lived) long_lived=1 ;;
    --idle-conns) idle_list=${2//,/ }; shift ;;
    --burst) burst=$2; shift ;;
    --paced-conns) paced_conns=$2; shift ;;
    --paced-rate) paced_rate=$2; shift ;;
    --paced-secs) paced_secs=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
bench_round_trips "$quick"
if [ "$quick" = 1 ]; then
  : "${idle_list:=1000}" "${paced_conns:=300}" "${paced_secs:=3}"
else
  : "${idle_list:=5000 9000}" "${paced_conns:=2000}" "${paced_secs:=10}"
fi
conns=50
processes=fresh; [ "$long_lived" = 1 ] && processes=long-lived
port_base=${PORT_BASE:-19400}
echo_port=$((port_base + 1))
[ -n "$out" ] || out="$root/target/bench-results/compare-$(date -u +%Y%m%d-%H%M%S).json"
mkdir -p "$(dirname "$out")"

# --- prerequisites ---------------------------------------------------------------------------
bench_prerequisites

bench_binaries "$build"

most=$paced_conns
for n in $idle_list; do [ "$n" -gt "$most" ] && most=$n; done
bench_fd_limit "$most"

# --- processes -------------------------------------------------------------------------------
tmp=$scratch
ports_free "$echo_port"

# Echo backend on CPU 1.
taskset -c 1 "$load_bin" echo --bind "127.0.0.1:$echo_port" 2>"$tmp/echo.log" &
echo_pid=$!; pids+=("$echo_pid")
wait_port "$echo_port"

# The proxies, all on CPU 0. By default started afresh for every round and for each idle
# measurement: two processes of one binary on this VM differed by up to 8 % in CPU per round
# trip for as long as they lived (memory placement), so with one process each a whole run
# carried the luck of its processes, and fresh ones every round let the medians average it out.
# --long-lived measures the other way, as proxies run in production.
bench_targets_configure "$tmp" "$port_base" "$echo_port" "$want_fds"
clk_tck=$(getconf CLK_TCK)

# The load tool's options per target (bench/lib.sh), and for the backend itself.
target_args() {
  case "$1" in
    direct) echo "--url ws://127.0.0.1:$echo_port/ws --subprotocol= --cpu-pid $echo_pid" ;;
    *) bench_target_args "$1" ;;
  esac
}

pingpong() { # target k messages label outfile
  bench_pingpong "$(target_args "$1")" "$2" "$3" "$4" "$5"
}

paced() { # target label outfile
  # shellcheck disable=SC2046
  timeout $((paced_secs + 150)) taskset -c 1 "$load_bin" paced $(target_args "$1") \
    --clk-tck "$clk_tck" -n "$paced_conns" --rate "$paced_rate" --secs "$paced_secs" \
    --warmup-secs 2 --label "$2" >"$3" || die "paced run $2 failed (exit $?)"
  check_report "$3" "$2"
  jq -e '.msg_per_s >= 0.97 * .target_msg_per_s' "$3" >/dev/null \
    || log "warning: $2 reached $(jq '.msg_per_s | floor' "$3") of $paced_rate messages/s"
}

# Functional check and warm-up for every target, after every start.
warm_up() {
  local t
  for t in direct nginx haproxy wsnorm no_rules tcp_relay; do
    pingpong "$t" 1 200 "warmup-$t" "$tmp/warmup-$t.json"
  done
}

# --- ping-pong and paced, interleaved rounds -------------------------------------------------
started=$(date +%s)
if [ "$long_lived" = 1 ]; then
  bench_targets_start
  warm_up
  log "all targets answer correctly (wsnorm rewrites every message exactly); long-lived processes"
fi
# The proxies run back to back at each K, nginx next to both wsnorm and HAProxy, and their
# order is reversed every other round (bench_order).
for r in $(seq 1 "$rounds"); do
  if [ "$long_lived" = 0 ]; then
    bench_targets_start
    warm_up
    [ "$r" = 1 ] && log "all targets answer correctly (wsnorm rewrites every message exactly)"
  fi
  bench_pingpong_round "$r" direct haproxy nginx wsnorm no_rules tcp_relay
  for t in $(bench_order "$r" haproxy nginx wsnorm); do
    f="$tmp/paced-$t-r$r.json"
    paced "$t" "$t paced round $r" "$f"
    log "$(jq -r "$bench_fmt_run" "$f")"
  done
  [ "$long_lived" = 1 ] || bench_targets_stop
done

# --- idle memory -----------------------------------------------------------------------------
# The load tool reads the proxy's VmRSS before opening and once each stage has settled.
idle_run() { # target connections
  # shellcheck disable=SC2046
  bench_idle "$1" "$2" "$burst" $(bench_target_args "$1" --measure-pid) --quiet-secs 12
}
for n in $idle_list; do
  [ "$long_lived" = 1 ] || bench_targets_start
  for t in nginx haproxy wsnorm; do idle_run "$t" "$n"; done
  [ "$long_lived" = 1 ] || bench_targets_stop
done
elapsed=$(($(date +%s) - started))

# --- summary ---------------------------------------------------------------------------------
jq -s '.' "$tmp"/idle-*-*.json >"$tmp/idle.json"
jq -s -L "$root/bench" --argjson head "$(bench_header)" --argjson rounds "$rounds" \
  --argjson quick "$quick" --arg processes "$processes" \
  --argjson paced_conns "$paced_conns" --argjson paced_rate "$paced_rate" \
  --argjson paced_secs "$paced_secs" \
  --argjson elapsed "$elapsed" --slurpfile idle "$tmp/idle.json" 'include "lib";
  # $t against $ref: CPU per message (medians, per round, best rounds) and p99 for ping-pong
  # at both K and for the paced run; idle memory per connection at each count.
  def versus($runs; $t; $ref): ($runs | pingpong_versus($t; $ref)) + {
    paced_cpu_per_msg: ($runs | cpu($t; $ref; "paced")),
    paced_cpu_per_msg_paired: ($runs | paired($t; $ref; "paced")),
    paced_p99: ($runs | p99($t; $ref; "paced")),
    idle: ($idle[0] | group_by(.connections) | map(
      (map(select(.target == $t))[0]) as $a | (map(select(.target == $ref))[0]) as $b |
      { key: (.[0].connections | tostring),
        value: { rss_per_conn_open: ratio($a.kib_per_conn_open; $b.kib_per_conn_open),
                 rss_per_conn_touched: ratio($a.kib_per_conn_touched; $b.kib_per_conn_touched),
                 rss_per_conn_burst: ratio($a.kib_per_conn_burst; $b.kib_per_conn_burst) } })
      | from_entries) };
  . as $runs |
  $head + {
    processes: $processes, rounds: $rounds, quick: ($quick == 1), seconds: $elapsed,
    pingpong: pingpong_summary(["direct", "nginx", "haproxy", "wsnorm", "no_rules", "tcp_relay"]),
    paced: ({ connections: $paced_conns, target_msg_per_s: $paced_rate, secs: $paced_secs } +
      (["nginx", "haproxy", "wsnorm"] | map(. as $t | { key: $t, value: ($runs | target($t; "paced")) })
        | from_entries)),
    idle: $idle[0],
    wsnorm_vs: { nginx: versus($runs; "wsnorm"; "nginx"), haproxy: versus($runs; "wsnorm"; "haproxy") },
    references_vs_nginx: { haproxy: versus($runs; "haproxy"; "nginx"),
      no_rules: versus($runs; "no_rules"; "nginx"), tcp_relay: versus($runs; "tcp_relay"; "nginx") },
    runs: $runs }
  ' "$tmp"/pp-*.json "$tmp"/paced-*.json >"$out"

jq -r -L "$root/bench" 'include "lib";
  def paced_row($t): .paced[$t] as $r |
    "| \($t) | \(f($r.msg_per_s; 0)) | \(f($r.p50_us; 0)) | \(f($r.p99_us; 0)) | \(f($r.cpu_us_per_msg; 2)) |";
  def both(what): "\(f(.wsnorm_vs.nginx | what; 2)) | \(f(.wsnorm_vs.haproxy | what; 2))";
  def reference_row($t; $what): .references_vs_nginx[$t] as $r |
    "| \($t) (\($what)) CPU, K=1 / K=16 / paced; p99 K=1 (not goals) | \(f($r.cpu_per_msg_k1; 2)) (per round: \(f($r.cpu_per_msg_k1_paired; 2))) / \(f($r.cpu_per_msg_k16; 2)) / \(f($r.paced_cpu_per_msg; 2)); \(f($r.p99_k1; 2)) | - | - | - |";
  . as $all |
  machine_line,
  "",
  pingpong_table(["direct", "nginx", "haproxy", "wsnorm", "no_rules", "tcp_relay"]),
  "",
  "(direct: the CPU column is the echo backend itself; no_rules: wsnorm with no rules; tcp_relay: a plain tokio TCP relay)",
  "",
  "paced: \(.paced.connections) connections, \(.paced.target_msg_per_s) messages/s in total for \(.paced.secs) s",
  "",
  "| target | messages/s | p50 us | p99 us | proxy CPU us/message |",
  "|---|---:|---:|---:|---:|",
  paced_row("nginx"), paced_row("haproxy"), paced_row("wsnorm"),
  "",
  "| idle connections | RSS before KiB | open KiB | after 1 msg KiB | after burst + quiet KiB | KiB/conn open | after 1 msg | after burst |",
  "|---|---:|---:|---:|---:|---:|---:|---:|",
  (.idle | sort_by(.connections, ({nginx: 0, haproxy: 1, wsnorm: 2}[.target]))[] |
    "| \(.target) x\(.connections) | \(.rss_before_kib) | \(.rss_open_kib) | \(.rss_touched_kib) | \(.rss_burst_kib // "-") | \(f(.kib_per_conn_open; 2)) | \(f(.kib_per_conn_touched; 2)) | \(f(.kib_per_conn_burst; 2)) |"),
  "(burst: \(.idle[0].burst_messages / .idle[0].connections) messages of \(.idle[0].burst_bytes // "-") bytes per connection written at once, then 12 s quiet)",
  "",
  goals_head("goal"),
  cpu_row("proxy CPU per round trip, K=1"; "k1"; 1.2),
  cpu_row("proxy CPU per round trip, K=16"; "k16"; 1.2),
  "| p99 round trip, K=1 | \(both(.p99_k1)) | <= 1.0x nginx | \(verdict(.wsnorm_vs.nginx.p99_k1; 1.0)) |",
  "| p99 round trip, K=16 (not a goal) | \(both(.p99_k16)) | - | - |",
  "| proxy CPU per message, paced | \(f(.wsnorm_vs.nginx.paced_cpu_per_msg; 2)) (per round: \(f(.wsnorm_vs.nginx.paced_cpu_per_msg_paired; 2))) | \(f(.wsnorm_vs.haproxy.paced_cpu_per_msg; 2)) | <= 1.2x nginx | \(verdict(.wsnorm_vs.nginx.paced_cpu_per_msg; 1.2)) |",
  "| p99, paced (not a goal) | \(both(.paced_p99)) | - | - |",
  (.idle | map(select(.target == "wsnorm")) | sort_by(.connections)[] | . as $w |
    ($all.wsnorm_vs.nginx.idle[$w.connections | tostring]) as $n |
    ($all.wsnorm_vs.haproxy.idle[$w.connections | tostring]) as $h |
    "| RSS per idle connection, \($w.connections) connections (wsnorm \(f($w.kib_per_conn_open; 2)) KiB) | \(f($n.rss_per_conn_open; 2)) | \(f($h.rss_per_conn_open; 2)) | <= 1.0x HAProxy | \(verdict($h.rss_per_conn_open; 1.0)) |",
    "| the same after a burst and quiet (wsnorm \(f($w.kib_per_conn_burst; 2)) KiB) | \(f($n.rss_per_conn_burst; 2)) | \(f($h.rss_per_conn_burst; 2)) | <= 1.5x HAProxy | \(verdict($h.rss_per_conn_burst; 1.5)) |"),
  reference_row("haproxy"; "pass-through"),
  reference_row("no_rules"; "no rules"),
  reference_row("tcp_relay"; "tokio, bytes only"),
  "",
  "took \(.seconds) s"
' "$out"
log "results: $out"
