#!/usr/bin/env bash
# Side-by-side performance comparison: the echo backend directly, nginx 1.22 as a pass-through
# WebSocket proxy, and wsnorm (threads = 1, default rules rewriting every message), all in one run;
# also wsnorm with no rules ("passthrough"), so the run shows what the rewriting itself costs, and
# a plain tokio TCP relay ("tcp_relay", `wsnorm-load relay`): what a proxy on tokio costs before it
# looks at a frame.
#
#   bench/compare.sh [--quick] [--rounds N] [--idle-conns N] [--out FILE] [--no-build]
#   wsnorm is built and measured as shipped: scripts/build-pgo.sh (`dist`, fat LTO, PGO),
#   target/pgo/wsnorm; the load tool and echo backend from `cargo build --profile dist`.
#   (WSNORM_BIN=/path/to/wsnorm compares another build of wsnorm, e.g. target/dist/wsnorm
#   without PGO or a candidate fix; LOAD_BIN=/path/to/wsnorm-load another load tool)
#
# The proxy under test runs on CPU 0 (taskset -c 0); the load generator and the echo backend
# (both `wsnorm-load`, single-threaded) on CPU 1. For each target:
#   * ping-pong, 50 connections, 1 message in flight, then 16 in flight per connection:
#     round trips/s, p50/p99 latency, and the proxy's CPU time per round trip (utime+stime from
#     /proc/PID/stat over the measured window, ticks -> us via CLK_TCK; for nginx master+worker);
#     rounds are interleaved (at each K: direct, then the proxies back to back, their order
#     reversed every round), every round with freshly started proxies, and the median is
#     reported;
#   * memory: VmRSS of the proxy (nginx: master+worker) before and after opening N idle
#     connections through it (and again after one message on each), divided by N.
# Prints a table with the ratios wsnorm/nginx and writes a JSON result file (default
# target/bench-results/compare-DATE.json, outside git).
# Everything is on 127.0.0.1, every wait is bounded, and every process started is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh

quick=0
rounds=5
idle_conns=5000
out=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --idle-conns) idle_conns=$2; shift ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$quick" = 1 ]; then
  rounds=1; m1=300; m16=600; [ "$idle_conns" = 5000 ] && idle_conns=1000
else
  m1=${M1:-2000}; m16=${M16:-5000}
fi
conns=50
port_base=${PORT_BASE:-19400}
echo_port=$((port_base + 1))
[ -n "$out" ] || out="$root/target/bench-results/compare-$(date -u +%Y%m%d-%H%M%S).json"
mkdir -p "$(dirname "$out")"

# --- prerequisites ---------------------------------------------------------------------------
install_missing nginx:nginx jq:jq taskset:util-linux
[ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (proxy on CPU 0, load on CPU 1)"

bench_binaries "$build"

# Each proxy holds 2 descriptors per idle connection; the load tool and the echo backend one.
want_fds=$((2 * idle_conns + 1000))
[ "$want_fds" -ge 10240 ] || want_fds=10240
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$want_fds" ]; then
  die "ulimit -Hn is $hard; $want_fds file descriptors needed for $idle_conns idle connections"
fi
ulimit -n "$want_fds"

# --- processes -------------------------------------------------------------------------------
tmp=$scratch
ports_free "$echo_port"

# Echo backend on CPU 1.
taskset -c 1 "$load_bin" echo --bind "127.0.0.1:$echo_port" 2>"$tmp/echo.log" &
echo_pid=$!; pids+=("$echo_pid")
wait_port "$echo_port"

# The proxies, all on CPU 0, started afresh for every round (and once more for the memory
# measurement): two processes of one binary on this VM differ by up to 8 % in CPU per round trip
# for as long as they live (memory placement), so with one process each a whole run carried the
# luck of its processes; fresh ones every round let the medians average it out.
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
  # shellcheck disable=SC2046
  timeout 150 taskset -c 1 "$load_bin" pingpong $(target_args "$1") --clk-tck "$clk_tck" \
    -n "$conns" -k "$2" -m "$3" --warmup 50 --max-secs 120 --label "$4" >"$5" \
    || die "load run $4 failed (exit $?)"
  check_report "$5" "$4"
}

# Functional check and warm-up for every target, after every start.
warm_up() {
  local t
  for t in direct nginx wsnorm passthrough tcp_relay; do
    pingpong "$t" 1 200 "warmup-$t" "$tmp/warmup-$t.json"
  done
}

# --- ping-pong, interleaved rounds -----------------------------------------------------------
started=$(date +%s)
# The proxies run back to back at each K, nginx and wsnorm next to each other, and their order
# is reversed every round: this VM's speed drifts over seconds, and a fixed order with another
# load in between charged the drift to one side.
for r in $(seq 1 "$rounds"); do
  bench_targets_start
  warm_up
  [ "$r" = 1 ] && log "all targets answer correctly (wsnorm rewrites every message exactly)"
  proxies="nginx wsnorm passthrough tcp_relay"
  [ $((r % 2)) = 0 ] && proxies="tcp_relay passthrough wsnorm nginx"
  for k in 1 16; do
    for t in direct $proxies; do
      m=$m1; [ "$k" = 16 ] && m=$m16
      f="$tmp/pp-$t-k$k-r$r.json"
      pingpong "$t" "$k" "$m" "$t k=$k round $r" "$f"
      log "$(jq -r '"\(.label): \(.msg_per_s|floor) msg/s p50 \(.p50_us) us p99 \(.p99_us) us cpu/msg \(.proxy_cpu_us_per_msg // 0 | .*100|round/100) us"' "$f")"
    done
  done
  bench_targets_stop
done

# --- idle memory -----------------------------------------------------------------------------
rss_kib() { # pids...
  local total=0 p v
  for p in "$@"; do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
wait_event() { # file event seconds
  local i
  for i in $(seq 1 $(($3 * 10))); do
    grep -q "\"event\":\"$2\"" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "idle load: no '$2' event within $3 s"
}
idle_run() { # target pids...
  local t=$1; shift
  local f="$tmp/idle-$t.out" before opened touched ipid url
  case "$t" in
    nginx) url=ws://127.0.0.1:$nginx_port/ws; sp="--subprotocol=" ;;
    wsnorm) url=ws://127.0.0.1:$wsnorm_port/ws; sp="--subprotocol=agent_chat" ;;
  esac
  sleep 1
  before=$(rss_kib "$@")
  taskset -c 1 "$load_bin" idle --url "$url" "$sp" -n "$idle_conns" --touch \
    --touch-after-secs 4 --hold-secs 90 >"$f" 2>"$tmp/idle-$t.err" &
  ipid=$!; pids+=("$ipid")
  wait_event "$f" open 60
  sleep 2
  opened=$(rss_kib "$@")
  wait_event "$f" touched 60
  sleep 2
  touched=$(rss_kib "$@")
  kill -TERM "$ipid" 2>/dev/null || true
  wait "$ipid" 2>/dev/null || true
  forget "$ipid"
  jq -c --arg t "$t" --argjson before "$before" --argjson opened "$opened" \
    --argjson touched "$touched" --argjson n "$idle_conns" -s '
    (map(select(.event=="open"))[0]) as $o | (map(select(.event=="touched"))[0]) as $u |
    { target: $t, connections: $n, connections_ok: $o.connections_ok, open_errors: $o.errors,
      touch_errors: ($u.errors // null), rss_before_kib: $before, rss_open_kib: $opened,
      rss_touched_kib: $touched,
      kib_per_conn_open: (($opened - $before) / $n),
      kib_per_conn_touched: (($touched - $before) / $n) }' "$f" >"$tmp/idle-$t.json"
  [ "$(jq .connections_ok "$tmp/idle-$t.json")" = "$idle_conns" ] \
    || die "idle $t: only $(jq .connections_ok "$tmp/idle-$t.json") of $idle_conns opened: $(jq -r 'select(.first_error) | .first_error' "$f" | head -n1)"
  # Let the proxy see the closes before the next measurement.
  sleep 3
  log "$(jq -r '"idle \(.target): \(.connections_ok) conns, RSS \(.rss_before_kib) -> \(.rss_open_kib) -> \(.rss_touched_kib) KiB: \(.kib_per_conn_open*100|round/100) KiB/conn open, \(.kib_per_conn_touched*100|round/100) after one message"' "$tmp/idle-$t.json")"
}
bench_targets_start
idle_run nginx "$nginx_pid" "$nginx_worker"
idle_run wsnorm "$wsnorm_pid"
elapsed=$(($(date +%s) - started))

# --- summary ---------------------------------------------------------------------------------
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
jq -s --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg kernel "$(uname -r)" \
  --arg cpu "$cpu_model" --argjson nproc "$(nproc)" --argjson rounds "$rounds" \
  --argjson quick "$quick" --arg nginx "$("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///')" \
  --argjson elapsed "$elapsed" --arg wsnorm_bin "$wsnorm_bin" --slurpfile idle_n "$tmp/idle-nginx.json" \
  --slurpfile idle_w "$tmp/idle-wsnorm.json" '
  def median: sort | if length == 0 then null elif length % 2 == 1 then .[length/2|floor]
    else (.[length/2 - 1] + .[length/2]) / 2 end;
  def target($t; $k): map(select(.label | startswith("\($t) k=\($k) "))) |
    { runs: length,
      msg_per_s: (map(.msg_per_s) | median),
      p50_us: (map(.p50_us) | median),
      p99_us: (map(.p99_us) | median),
      max_us: (map(.max_us) | median),
      cpu_us_per_msg: (map(.proxy_cpu_us_per_msg) | median),
      sched_us_per_msg: (map(.proxy_sched_us_per_msg) | median),
      cpu_us_per_msg_all: map(.proxy_cpu_us_per_msg) };
  def ratio($a; $b): if $a == null or $b == null or $b == 0 then null else $a / $b end;
  # $t/nginx within each round (they ran back to back), then the median over rounds.
  def paired($t; $k): [range(1; $rounds + 1) as $r |
      (map(select(.label == "\($t) k=\($k) round \($r)"))[0].proxy_cpu_us_per_msg) as $w |
      (map(select(.label == "nginx k=\($k) round \($r)"))[0].proxy_cpu_us_per_msg) as $n |
      select($w != null and $n != null and $n > 0) | $w / $n] | median;
  # The least disturbed round of each: this VM reports no steal time, so time the hypervisor
  # takes from CPU 0 is counted as the running proxy and only ever adds.
  def best($k): (target("wsnorm"; $k) | .cpu_us_per_msg_all | min) as $w |
      (target("nginx"; $k) | .cpu_us_per_msg_all | min) as $n | ratio($w; $n);
  # A reference (passthrough, tcp_relay) against nginx: CPU per round trip (medians and per
  # round) at both K, p99 at K=1. $runs are the runs, $p the medians of `pingpong` below.
  def reference($runs; $p; $t): {
    cpu_per_msg_k1: ratio($p.k1[$t].cpu_us_per_msg; $p.k1.nginx.cpu_us_per_msg),
    cpu_per_msg_k1_paired: ($runs | paired($t; 1)),
    cpu_per_msg_k16: ratio($p.k16[$t].cpu_us_per_msg; $p.k16.nginx.cpu_us_per_msg),
    cpu_per_msg_k16_paired: ($runs | paired($t; 16)),
    p99_k1: ratio($p.k1[$t].p99_us; $p.k1.nginx.p99_us) };
  . as $runs |
  { date: $date, machine: { nproc: $nproc, cpu: $cpu, kernel: $kernel }, nginx_version: $nginx,
    wsnorm_bin: $wsnorm_bin, rounds: $rounds, quick: ($quick == 1), seconds: $elapsed,
    pingpong: { k1: { direct: ($runs | target("direct"; 1)), nginx: ($runs | target("nginx"; 1)),
                      wsnorm: ($runs | target("wsnorm"; 1)),
                      passthrough: ($runs | target("passthrough"; 1)),
                      tcp_relay: ($runs | target("tcp_relay"; 1)) },
                k16: { direct: ($runs | target("direct"; 16)), nginx: ($runs | target("nginx"; 16)),
                       wsnorm: ($runs | target("wsnorm"; 16)),
                       passthrough: ($runs | target("passthrough"; 16)),
                       tcp_relay: ($runs | target("tcp_relay"; 16)) } },
    idle: { nginx: $idle_n[0], wsnorm: $idle_w[0] },
    runs: $runs } |
  .ratios = {
    cpu_per_msg_k1_paired: ($runs | paired("wsnorm"; 1)),
    cpu_per_msg_k16_paired: ($runs | paired("wsnorm"; 16)),
    passthrough: reference($runs; .pingpong; "passthrough"),
    tcp_relay: reference($runs; .pingpong; "tcp_relay"),
    cpu_per_msg_k1_best: ($runs | best(1)),
    cpu_per_msg_k16_best: ($runs | best(16)),
    cpu_per_msg_k1: ratio(.pingpong.k1.wsnorm.cpu_us_per_msg; .pingpong.k1.nginx.cpu_us_per_msg),
    cpu_per_msg_k16: ratio(.pingpong.k16.wsnorm.cpu_us_per_msg; .pingpong.k16.nginx.cpu_us_per_msg),
    p99_k1: ratio(.pingpong.k1.wsnorm.p99_us; .pingpong.k1.nginx.p99_us),
    p99_k16: ratio(.pingpong.k16.wsnorm.p99_us; .pingpong.k16.nginx.p99_us),
    rss_per_idle_conn: ratio(.idle.wsnorm.kib_per_conn_open; .idle.nginx.kib_per_conn_open),
    rss_per_idle_conn_touched: ratio(.idle.wsnorm.kib_per_conn_touched; .idle.nginx.kib_per_conn_touched) }
  ' "$tmp"/pp-*.json >"$out"

jq -r '
  def f($x; $d): if $x == null then "-" else ($x * pow(10; $d) | round) / pow(10; $d) | tostring end;
  def row($k; $t): .pingpong[$k][$t] as $r |
    "| \($k) | \($t) | \(f($r.msg_per_s; 0)) | \(f($r.p50_us; 0)) | \(f($r.p99_us; 0)) | \(f($r.cpu_us_per_msg; 2)) |";
  def ok($c): if $c then "met" else "NOT met" end;
  def reference_row($t; $what): .ratios[$t] as $r |
    "| \($t) (\($what)) CPU, K=1 / K=16; p99 K=1 (not goals) | \(f($r.cpu_per_msg_k1; 2)) (per round: \(f($r.cpu_per_msg_k1_paired; 2))) / \(f($r.cpu_per_msg_k16; 2)); \(f($r.p99_k1; 2)) | - | - |";
  "machine: \(.machine.nproc) CPUs, \(.machine.cpu), kernel \(.machine.kernel); nginx \(.nginx_version); \(.rounds) round(s), medians",
  "",
  "| load | target | round trips/s | p50 us | p99 us | proxy CPU us/round trip |",
  "|---|---|---:|---:|---:|---:|",
  row("k1"; "direct"), row("k1"; "nginx"), row("k1"; "wsnorm"), row("k1"; "passthrough"), row("k1"; "tcp_relay"),
  row("k16"; "direct"), row("k16"; "nginx"), row("k16"; "wsnorm"), row("k16"; "passthrough"), row("k16"; "tcp_relay"),
  "",
  "(direct: the CPU column is the echo backend itself; passthrough: wsnorm with no rules; tcp_relay: a plain tokio TCP relay)",
  "",
  "| idle connections | RSS before KiB | after open KiB | after 1 msg KiB | KiB/conn open | KiB/conn after 1 msg |",
  "|---|---:|---:|---:|---:|---:|",
  (.idle | to_entries[] | .value |
    "| \(.target) x\(.connections) | \(.rss_before_kib) | \(.rss_open_kib) | \(.rss_touched_kib) | \(f(.kib_per_conn_open; 2)) | \(f(.kib_per_conn_touched; 2)) |"),
  "",
  "| goal | wsnorm/nginx | goal | verdict |",
  "|---|---:|---:|---|",
  "| proxy CPU per round trip, K=1 | \(f(.ratios.cpu_per_msg_k1; 2)) (per round: \(f(.ratios.cpu_per_msg_k1_paired; 2)); best rounds: \(f(.ratios.cpu_per_msg_k1_best; 2))) | <= 1.2 | \(ok(.ratios.cpu_per_msg_k1 <= 1.2)) |",
  "| proxy CPU per round trip, K=16 | \(f(.ratios.cpu_per_msg_k16; 2)) (per round: \(f(.ratios.cpu_per_msg_k16_paired; 2)); best rounds: \(f(.ratios.cpu_per_msg_k16_best; 2))) | <= 1.2 | \(ok(.ratios.cpu_per_msg_k16 <= 1.2)) |",
  "| p99 round trip, K=1 | \(f(.ratios.p99_k1; 2)) | <= 1.0 | \(ok(.ratios.p99_k1 <= 1.0)) |",
  "| p99 round trip, K=16 (not a goal) | \(f(.ratios.p99_k16; 2)) | - | - |",
  reference_row("passthrough"; "no rules"),
  reference_row("tcp_relay"; "tokio, bytes only"),
  "| RSS per idle connection | \(f(.ratios.rss_per_idle_conn; 2)) (\(f(.idle.wsnorm.kib_per_conn_open; 1)) KiB) | <= 17.5 KiB | \(ok(.idle.wsnorm.kib_per_conn_open <= 17.5)) |",
  "| RSS per idle connection after 1 message | \(f(.ratios.rss_per_idle_conn_touched; 2)) (\(f(.idle.wsnorm.kib_per_conn_touched; 1)) KiB) | <= 17.5 KiB | \(ok(.idle.wsnorm.kib_per_conn_touched <= 17.5)) |",
  "",
  "took \(.seconds) s"
' "$out"
log "results: $out"
