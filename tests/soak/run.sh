#!/usr/bin/env bash
# Load and soak through wsnorm, nothing lost: N concurrent connections (default 5,000), each
# sending incident-style messages (ISO timestamp + execute_agent) to an echo backend through
# wsnorm, for several rounds. Every echo must arrive, in order, rewritten exactly (the load tool
# compares bytes); after each round every connection must be closed and wsnorm's memory must
# come back near where it was, without growing from round to round. Then the connections again,
# each carrying a burst of 64 KiB messages and going quiet: memory per quiet connection checked.
#
#   tests/soak/run.sh [--connections N] [--messages M] [--rounds R] [--no-build]
#   (PROFILE=dist runs the binaries `cargo build --profile dist` makes; WSNORM_BIN=FILE runs that
#   wsnorm instead, e.g. target/pgo/wsnorm from scripts/build-pgo.sh, the one the image ships)
#
# Ends with `N passed, M failed` (checks); exit 1 on any failed check.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
CONNS=5000 MESSAGES=20 ROUNDS=3 BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) CONNS=$2; shift ;;
    --messages) MESSAGES=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --no-build) BUILD=0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
PROFILE=${PROFILE:-release}
if [ "$BUILD" = 1 ]; then
  if [ -n "${WSNORM_BIN:-}" ]; then
    cargo build --profile "$PROFILE" --bin wsnorm-load >&2
  else
    cargo build --profile "$PROFILE" --bin wsnorm --bin wsnorm-load >&2
  fi
fi
WSNORM=${WSNORM_BIN:-$ROOT/target/$PROFILE/wsnorm}
LOAD=$ROOT/target/$PROFILE/wsnorm-load
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
echo_port=$(free_port) listen=$(free_port) admin=$(free_port)

"$LOAD" echo --bind "127.0.0.1:$echo_port" >"$work/echo.log" 2>&1 &
pids+=($!)
"$WSNORM" --listen "127.0.0.1:$listen" --admin "127.0.0.1:$admin" \
  --backend "127.0.0.1:$echo_port" --log-format json >"$work/wsnorm.log" 2>&1 &
wsnorm_pid=$!
pids+=("$wsnorm_pid")

metric() { # the sum of the series a selector's first labels pick (every route) from /metrics
  python3 - "$admin" "$1" <<'EOF'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
want = sys.argv[2].removesuffix("}")
starts = (want + ",", want + "}") if "{" in want else (want + " ", want + "{")
values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(starts)]
print(f"{sum(values):g}")
EOF
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$wsnorm_pid/status"; }
# The round's true peak: the kernel's high-water mark, reset to the current RSS before each
# round. (RSS sampled when the load tool exits is not the peak: connections are already closing,
# and a low "peak" made the memory check below fail on a good run.)
reset_peak() { echo 5 >"/proc/$wsnorm_pid/clear_refs"; }
peak_kib() { awk '/^VmHWM/ {print $2}' "/proc/$wsnorm_pid/status"; }

for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$listen") 2>/dev/null && break
  sleep 0.1
done
sleep 0.5
baseline=$(rss_kib)
echo "soak: $CONNS connections x $MESSAGES messages x $ROUNDS rounds through wsnorm; RSS at start $baseline KiB"

passed=0 failed=0
check() { # description, condition (evaluated by python)
  if python3 -c "import sys; sys.exit(0 if ($2) else 1)"; then
    passed=$((passed + 1)); echo "  ok: $1"
  else
    failed=$((failed + 1)); echo "  FAILED: $1 ($2)"
  fi
}

after=()
for round in $(seq 1 "$ROUNDS"); do
  report=$work/round$round.json
  started=$SECONDS
  reset_peak
  "$LOAD" pingpong --url "ws://127.0.0.1:$listen/ws" -n "$CONNS" -m "$MESSAGES" -k 2 --warmup 0 \
    --expect-rewrite --open-concurrency 256 --max-secs 240 --label "soak round $round" >"$report" || true
  peak=$(peak_kib)
  read -r ok trips errors mismatches first_error < <(python3 - "$report" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["connections_ok"], r["round_trips"], r["errors"], r["mismatches"], json.dumps(r.get("first_error")))
EOF
  )
  # Every connection is closed by the load tool; wait until wsnorm has let go of all of them.
  for _ in $(seq 1 200); do
    [ "$(metric wsnorm_connections_active)" = 0 ] && break
    sleep 0.1
  done
  active=$(metric wsnorm_connections_active)
  # wsnorm hands freed memory back to the system every 10 s.
  sleep 11
  rss=$(rss_kib)
  after+=("$rss")
  echo "round $round ($((SECONDS - started)) s): $ok/$CONNS connected, $trips round trips, errors $errors, mismatches $mismatches; RSS peak $peak KiB, after close $rss KiB (first error: $first_error)"
  check "round $round: every connection opened" "$ok == $CONNS"
  check "round $round: every echo arrived" "$trips == $CONNS * $MESSAGES"
  check "round $round: no errors" "$errors == 0"
  check "round $round: every echo rewritten exactly, in order" "$mismatches == 0"
  check "round $round: all connections closed" "$active == 0"
  # 15 %: with a tracing span held per open connection, 5,000 closed connections left 23 %.
  check "round $round: memory back near the start after close (<= start + 15% of the peak's rise)" \
    "$rss <= $baseline + 0.15 * ($peak - $baseline) + 2048"
done
if [ "$ROUNDS" -gt 1 ]; then
  check "memory does not grow from round to round (last <= first + 10%)" \
    "${after[-1]} <= ${after[0]} * 1.10 + 1024"
fi
# Then quiet connections after a burst: each carries 4 messages of 64 KiB, then nothing for 12 s.
# What wsnorm holds per connection must be back to an idle connection's size: buffers are lent
# only while bytes move. The bound is issue 25's goal, 1.5x HAProxy's 4.6 KiB per idle proxied
# connection (bench/compare.sh measures the two side by side).
IDLE_AFTER_BURST_KIB=${IDLE_AFTER_BURST_KIB:-7}
"$LOAD" idle --url "ws://127.0.0.1:$listen/ws" -n "$CONNS" --open-concurrency 256 --expect-rewrite --touch \
  --burst 4 --measure-pid "$wsnorm_pid" --quiet-secs 12 --hold-secs 0 >"$work/idle.jsonl" || true
read -r idle_ok idle_burst idle_kib < <(python3 - "$work/idle.jsonl" <<'EOF'
import json, sys
events = {e["event"]: e for e in map(json.loads, open(sys.argv[1]))}
start, burst = events.get("start", {}), events.get("burst", {})
ok = events.get("open", {}).get("connections_ok", 0)
echoed = burst.get("connections_ok", 0)
per_conn = (burst["rss_kib"] - start["rss_kib"]) / max(ok, 1) if "rss_kib" in burst else float("inf")
print(ok, echoed, f"{per_conn:.2f}")
EOF
)
echo "idle after a burst: $idle_ok/$CONNS open, $idle_burst carried every echo of their burst; $idle_kib KiB per connection 12 s later"
check "idle after a burst: every connection opened and carried its burst" \
  "$idle_ok == $CONNS and $idle_burst == $CONNS"
check "idle after a burst: <= $IDLE_AFTER_BURST_KIB KiB per quiet connection" \
  "$idle_kib <= $IDLE_AFTER_BURST_KIB"
closes_1011=$(metric 'wsnorm_closes_total{code="1011",initiator="proxy"}')
check "no 1011 from wsnorm" "$closes_1011 == 0"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
