#!/usr/bin/env bash
# Measures wsnorm's memory (RSS) and CPU idle, with N idle WebSockets through it, for M round
# trips on each, and after one large message on each: the figures deploy/README.md sizes the
# Kubernetes requests/limits from. The echo backend and the client are `wsnorm-load` (testkit),
# the load tool of bench/compare.sh, which reads wsnorm's VmRSS, VmHWM and CPU time after each
# stage. Everything runs on loopback, on ports 28000 (echo backend), 28080 (wsnorm), 29090
# (admin).
#
#   deploy/tools/measure.sh [BINARY] [CONNECTIONS] [MESSAGES_PER_CONNECTION] [BIG_BYTES]
#   deploy/tools/measure.sh target/release/wsnorm 200 50 0
# BIG_BYTES > 0: after the round trips every connection sends one message of that size, all
# at once, and gets it back (the peak shows what large messages cost; the RSS is read 2 s later).
#
# Needs `cargo build --release --bin wsnorm --bin wsnorm-load` (LOAD_BIN=FILE: another
# wsnorm-load). CONFIG=FILE picks the config (default config/wsnorm.toml; the ConfigMap's file
# gives the same figures); every echo is checked against the default rules' rewrite.
# KEEP_TMP=1 keeps the load tool's JSON lines and the logs.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
bin=${1:-target/release/wsnorm}
n=${2:-200}
msgs=${3:-50}
big=${4:-0}
config=${CONFIG:-config/wsnorm.toml}
load=${LOAD_BIN:-target/release/wsnorm-load}
if [ ! -x "$bin" ] || [ ! -x "$load" ]; then
  die "needs $bin and $load (cargo build --release --bin wsnorm --bin wsnorm-load)"
fi
install_missing jq:jq curl:curl
ports_free 28000 28080 29090
# wsnorm holds two descriptors per connection, the load tool and the echo backend one each.
want_fds=$((2 * n + 200))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want_fds" ]; then
  ulimit -n "$want_fds" 2>/dev/null \
    || die "$n connections need $want_fds file descriptors; ulimit -Hn is $(ulimit -Hn)"
fi

"$load" echo --bind 127.0.0.1:28000 2>"$scratch/echo.log" &
pids+=("$!")
"$bin" --config "$config" --listen 127.0.0.1:28080 --admin 127.0.0.1:29090 \
  --backend 127.0.0.1:28000 2>"$scratch/wsnorm.log" &
wpid=$!
pids+=("$wpid")
wait_port 28000
wait_port 28080
wait_port 29090
curl -s -o /dev/null http://127.0.0.1:29090/readyz
sleep 5

stages=$scratch/stages.jsonl
burst=0
[ "$big" -gt 0 ] && burst=1
timeout 900 "$load" idle --url ws://127.0.0.1:28080/ws -n "$n" --expect-rewrite \
  --touch "$msgs" --burst "$burst" --burst-bytes "$((big > 0 ? big : 65536))" \
  --burst-concurrency "$n" --measure-pid "$wpid" --settle-secs 4 --quiet-secs 2 \
  --stage-timeout-secs 300 --hold-secs 0 >"$stages" 2>"$scratch/load.log" \
  || die "the load tool failed (exit $?): $(tail -n 3 "$scratch/load.log")"
if jq -e 'select(.errors > 0)' "$stages" >/dev/null; then
  die "$(jq -r 'select(.errors > 0) | "\(.event): \(.errors) failed: \(.first_error)"' "$stages")"
fi

# Every connection closed when the load tool exited; once wsnorm has let them all go, the RSS.
active() {
  curl -s http://127.0.0.1:29090/metrics \
    | awk '/^wsnorm_connections_active/ {s += $2} END {print s + 0}'
}
for _ in $(seq 1 100); do [ "$(active)" = 0 ] && break; sleep 0.1; done
sleep 2
closed_rss=$(awk '/^VmRSS/ {print $2}' "/proc/$wpid/status")

jq -rs --argjson n "$n" --argjson closed "$closed_rss" '
  def at($e): map(select(.event == $e))[0];
  def row($what; $e; $note): at($e) as $s | select($s != null) |
    "| \($what) | \($s.rss_kib) | \($s.hwm_kib) | \($s.cpu_us / 1000 | round) | \($note) |";
  at("start").rss_kib as $idle |
  "| stage | RSS KiB | peak KiB | CPU ms in the stage | |",
  "|---|---:|---:|---:|---|",
  row("idle, 5 s after start"; "start"; ""),
  row("\($n) idle WebSockets"; "open";
    "\((at("open").rss_kib - $idle) / $n * 10 | round / 10) KiB per connection"),
  row("after \(at("touched").messages // 0) round trips, one at a time"; "touched";
    (at("touched") | if .messages > 0 then "\(.cpu_us / .messages | round) us CPU per round trip" else "" end)),
  (if at("burst") then row("after \($n) x \(at("burst").message_bytes) bytes at once"; "burst";
    "\((at("burst").rss_kib - at("touched").rss_kib) / $n | round) KiB more per connection")
   else empty end),
  "| all closed | \($closed) | | | |"
' "$stages"
