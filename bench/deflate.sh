#!/usr/bin/env bash
# permessage-deflate (RFC 7692) on both legs: issue 21's CPU and memory goals, measured as
# bench/compare.sh measures them without compression. Every connection offers permessage-deflate
# and compresses each message (`wsnorm-load --deflate`); the echo backend accepts the offer,
# inflates and compresses its echoes with its own stream as a python `websockets` backend does
# (`wsnorm-load echo --deflate`), so nginx and HAProxy pass compressed frames through both ways,
# while wsnorm negotiates each leg itself, inflates, rewrites and sends on what its rules read,
# and passes the backend's compressed echoes to the client as they came (its defaults:
# passthrough, compress_to_backend = false).
#
#   bench/deflate.sh [--quick] [--rounds N] [--idle-conns N] [--quiet-secs S] [--no-python]
#     [--out FILE] [--no-build]
#   wsnorm is built and measured as compare.sh does (scripts/build-pgo.sh, target/pgo/wsnorm;
#   WSNORM_BIN, LOAD_BIN, M1 and M16 as there), with compare.sh's config: config/wsnorm.toml
#   with threads = 1, whose [websocket.compression] defaults negotiate both legs (checked).
#
# Measured:
#   * ping-pong, 50 connections, 1 message in flight, then 16, the ~256 B agent_chat JSON:
#     round trips/s, p50/p99 and the proxy's CPU time per round trip, for nginx, HAProxy,
#     wsnorm (default rules; every echo checked exactly rewritten) and wsnorm with no rules
#     ("no_rules", compare.sh's name). The goal compares proxies carrying the same compressed
#     frames on the client's socket, so two sets, each with its own rounds:
#       per_message: the clients offer `client_no_context_takeover; server_no_context_takeover`,
#         every message compressed on its own both ways, which is what wsnorm's defaults
#         (peer_context_takeover = false) negotiate whatever a client offers;
#       context: the clients offer what browsers send (`client_max_window_bits`), both peers
#         keep their context, and wsnorm runs with peer_context_takeover = true so that it
#         negotiates the same (a browser meeting wsnorm's defaults gets per_message's frames).
#     Rounds (--rounds, default 5) interleaved with fresh proxies each round and the order
#     reversed every other round, medians and per-round ratios, as compare.sh. Goal: wsnorm
#     <= 1.5x nginx in CPU per round trip;
#   * memory per idle connection: --idle-conns connections (default 5,000) through wsnorm with
#     its defaults, fresh, to the same echo backend, each offering what browsers send, touched
#     (one round trip, compressed both ways on both legs) and then quiet for --quiet-secs
#     (default 25: past two of wsnorm's keepalive checks, every ping_interval_secs / 2 = 10 s,
#     after which a quiet leg gives its deflater back); VmRSS per connection then, less before
#     opening. Goal: <= 24 KiB. Reference: the python `websockets` server at its defaults
#     (bench/websockets_echo.py, in the venv tests/python/run.sh uses), measured the same way:
#     one compressed leg, as the server (--no-python: not measured).
# The proxy under test (and the python server) runs on CPU 0, the load tool and the echo
# backend on CPU 1. Prints a summary table with the ratios to nginx and HAProxy and the goals'
# verdicts, and writes a JSON result file (default target/bench-results/deflate-DATE.json,
# outside git). --quick: 1 round, fewer round trips, 500 idle connections (unless
# --idle-conns). Everything is on 127.0.0.1, every wait is bounded, and every process started
# is killed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh
. tests/python/venv.sh

quick=0
rounds=5
idle_conns=""
quiet=25
python=1
out=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=$2; shift ;;
    --idle-conns) idle_conns=$2; shift ;;
    --quiet-secs) quiet=$2; shift ;;
    --no-python) python=0 ;;
    --out) out=$2; shift ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
bench_round_trips "$quick"
if [ "$quick" = 1 ]; then : "${idle_conns:=500}"; else : "${idle_conns:=5000}"; fi
conns=50
port_base=${PORT_BASE:-19500}
echo_port=$((port_base + 1))
python_port=$((port_base + 9))
[ -n "$out" ] || out="$root/target/bench-results/deflate-$(date -u +%Y%m%d-%H%M%S).json"
mkdir -p "$(dirname "$out")"

# --- prerequisites ---------------------------------------------------------------------------
bench_prerequisites
bench_binaries "$build"
[ "$python" = 0 ] || websockets_venv
bench_fd_limit "$idle_conns"

# --- processes -------------------------------------------------------------------------------
ports_free "$echo_port" "$python_port"
taskset -c 1 "$load_bin" echo --deflate --bind "127.0.0.1:$echo_port" 2>"$scratch/echo.log" &
pids+=("$!")
wait_port "$echo_port"
bench_targets_configure "$scratch" "$port_base" "$echo_port" "$want_fds"
clk_tck=$(getconf CLK_TCK)

targets="nginx haproxy wsnorm no_rules"
# The two sets' client offers (per_message_offer: bench/lib.sh).
context_offer="permessage-deflate;client_max_window_bits"
offer=""
pingpong() { # target k messages label outfile
  bench_pingpong "$(bench_target_args "$1") --deflate --deflate-offer $offer" "$2" "$3" "$4" "$5"
}
# Functional check and warm-up for every target, after every start.
warm_up() {
  local t
  for t in $targets; do pingpong "$t" 1 200 "warmup-$t" "$scratch/warmup-$t.json"; done
}
# wsnorm's configs with peer_context_takeover set to $1.
peer_context() {
  local c
  for c in "$targets_dir/wsnorm.toml" "$targets_dir/no_rules.toml"; do
    sed -i "s/^peer_context_takeover = .*/peer_context_takeover = $1/" "$c"
    grep -q "^peer_context_takeover = $1\$" "$c" || die "could not set peer_context_takeover in $c"
  done
}

# --- ping-pong, interleaved rounds, per set ----------------------------------------------------
started=$(date +%s)
for set in per_message context; do
  offer=${set}_offer; offer=${!offer}
  peer_context "$([ "$set" = context ] && echo true || echo false)"
  for r in $(seq 1 "$rounds"); do
    bench_targets_start
    warm_up
    if [ "$r" = 1 ]; then
      # The client leg is checked by the load tool (it fails unless the 101 accepts the offer).
      grep -q '"wsnorm.backend.extension":"permessage-deflate' "$targets_dir/wsnorm.log" \
        || die "wsnorm did not negotiate permessage-deflate with the backend (see $targets_dir/wsnorm.log; KEEP_TMP=1 keeps it)"
      log "$set: all targets answer correctly, permessage-deflate on both legs (wsnorm rewrites every message exactly)"
    fi
    # The proxies back to back at each K, nginx next to both wsnorm and HAProxy.
    bench_pingpong_round "$r" "" haproxy nginx wsnorm no_rules
    bench_targets_stop
  done
  mkdir -p "$scratch/$set"
  mv "$scratch"/pp-*.json "$scratch/$set/"
done
peer_context false

# --- idle memory -----------------------------------------------------------------------------
# A fresh wsnorm; connections touched, then quiet (the load tool frees its own deflaters).
bench_targets_start
# shellcheck disable=SC2046
bench_idle wsnorm "$idle_conns" 0 $(bench_target_args wsnorm --measure-pid) --deflate \
  --touch-quiet-secs "$quiet"
bench_targets_stop
if [ "$python" = 1 ]; then
  taskset -c 0 "$VENV/bin/python" bench/websockets_echo.py "$python_port" \
    2>"$scratch/websockets.log" &
  python_pid=$!; pids+=("$python_pid")
  wait_port "$python_port"
  bench_idle websockets "$idle_conns" 0 --url "ws://127.0.0.1:$python_port/ws" --subprotocol= \
    --measure-pid "$python_pid" --deflate --touch-quiet-secs "$quiet"
  stop_procs "$python_pid" || true
fi
elapsed=$(($(date +%s) - started))

# --- summary ---------------------------------------------------------------------------------
jq -s '.' "$scratch"/idle-*-*.json >"$scratch/idle.json"
# One set's ping-pong runs summarised.
summarise_set() { # set offer
  jq -s -L "$root/bench" --arg offer "$2" 'include "lib";
    { offer: $offer,
      pingpong: pingpong_summary(["nginx", "haproxy", "wsnorm", "no_rules"]),
      wsnorm_vs: { nginx: pingpong_versus("wsnorm"; "nginx"),
        haproxy: pingpong_versus("wsnorm"; "haproxy") },
      references_vs_nginx: { haproxy: pingpong_versus("haproxy"; "nginx"),
        no_rules: pingpong_versus("no_rules"; "nginx") },
      runs: . }' "$scratch/$1"/pp-*.json
}
jq -n --argjson head "$(bench_header)" --argjson rounds "$rounds" \
  --argjson quick "$quick" --argjson conns "$conns" --argjson quiet "$quiet" \
  --arg websockets "$( [ "$python" = 0 ] || "$VENV/bin/python" -c 'import websockets; print(websockets.__version__)')" \
  --argjson elapsed "$elapsed" --slurpfile idle "$scratch/idle.json" \
  --argjson per_message "$(summarise_set per_message "$per_message_offer")" \
  --argjson context "$(summarise_set context "$context_offer")" '
  $head + {
    processes: "fresh", rounds: $rounds, quick: ($quick == 1), seconds: $elapsed,
    connections: $conns, websockets_version: $websockets,
    sets: { per_message: $per_message, context: $context },
    idle: { quiet_secs: $quiet, offer: "permessage-deflate; client_max_window_bits",
      runs: $idle[0] } }' >"$out"

jq -r -L "$root/bench" 'include "lib";
  def idle($t): .idle.runs | map(select(.target == $t))[0];
  def reference_row($t; $what): .references_vs_nginx[$t] as $r |
    "| \($t) (\($what)) CPU per round trip, K=1 / K=16 (not goals) | \(f($r.cpu_per_msg_k1; 2)) (per round: \(f($r.cpu_per_msg_k1_paired; 2))) / \(f($r.cpu_per_msg_k16; 2)) (per round: \(f($r.cpu_per_msg_k16_paired; 2))) | - | - | - |";
  def set_tables($name; $what):
    "\($name): \($what) (offer: \(.offer))",
    "",
    pingpong_table(["nginx", "haproxy", "wsnorm", "no_rules"]),
    "",
    goals_head("goal (\($name))"),
    cpu_row("proxy CPU per round trip, K=1, both legs compressed, rules on"; "k1"; 1.5),
    cpu_row("proxy CPU per round trip, K=16, both legs compressed, rules on"; "k16"; 1.5),
    "| p99 round trip, K=1 (not a goal) | \(f(.wsnorm_vs.nginx.p99_k1; 2)) | \(f(.wsnorm_vs.haproxy.p99_k1; 2)) | - | - |",
    reference_row("haproxy"; "pass-through"),
    reference_row("no_rules"; "no rules"),
    "";
  machine_line,
  "",
  "permessage-deflate on both legs: \(.connections) connections, every message compressed; nginx and HAProxy pass the compressed frames through; wsnorm negotiates each leg and rewrites (default rules). (no_rules: wsnorm with no rules)",
  "",
  (.sets.per_message | set_tables("per_message"; "every message compressed on its own both ways: wsnorm with its defaults")),
  (.sets.context | set_tables("context"; "both peers keep their context, as browsers and python websockets do directly: wsnorm with peer_context_takeover = true")),
  "| idle, compressed, \(.idle.quiet_secs) s quiet after one round trip | RSS before KiB | open KiB | after 1 msg + quiet KiB | KiB/conn open | KiB/conn after 1 msg + quiet |",
  "|---|---:|---:|---:|---:|---:|",
  (.idle.runs | sort_by(.target != "wsnorm")[] |
    "| \(.target) x\(.connections) | \(.rss_before_kib) | \(.rss_open_kib) | \(.rss_touched_kib) | \(f(.kib_per_conn_open; 2)) | \(f(.kib_per_conn_touched; 2)) |"),
  "(wsnorm: its defaults, both legs compressed, the clients offering what browsers send; websockets: python websockets \(.websockets_version) at its defaults, the server of one compressed leg)",
  "",
  (idle("wsnorm") as $w | idle("websockets") as $p |
    "| RSS per idle connection, both legs compressed, \($w.connections) connections, touched then \(.idle.quiet_secs) s quiet: wsnorm \(f($w.kib_per_conn_touched; 2)) KiB | <= 24 KiB (python websockets, one leg: \(f($p.kib_per_conn_touched; 2)) KiB) | \(verdict($w.kib_per_conn_touched; 24)) |"),
  "",
  "took \(.seconds) s"
' "$out"
log "results: $out"
