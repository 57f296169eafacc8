#!/usr/bin/env bash
# Measures wsnorm's memory (RSS) and CPU idle, with N idle WebSockets through it, and for a round
# of messages: the figures deploy/README.md sizes the Kubernetes requests/limits from.
# Everything runs on loopback, on ports 28000 (demo backend), 28080 (wsnorm), 29090 (admin).
#
#   deploy/tools/measure.sh [BINARY] [CONNECTIONS] [MESSAGES_PER_CONNECTION] [BIG_BYTES]
#   deploy/tools/measure.sh target/release/wsnorm 200 50 0
# BIG_BYTES > 0: after the message round every connection sends one message of that size at
# once (the peak, rss_peak, shows what large messages cost).
#
# Needs python3 with `websockets` (pip install websockets). CONFIG=FILE picks the config
# (default config/wsnorm.toml; the ConfigMap's file gives the same figures).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/wsnorm}
n=${2:-200}
msgs=${3:-50}
big=${4:-0}
config=${CONFIG:-config/wsnorm.toml}
tick=$(getconf CLK_TCK)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ms() { awk -v t="$tick" '{print int(($14 + $15) * 1000 / t)}' "/proc/$1/stat"; }
report() { # label
  printf '%-34s rss=%6s KiB  rss_peak=%6s KiB  cpu_total=%5s ms  threads=%s  active=%s\n' "$1" \
    "$(rss_kib "$wpid")" "$(hwm_kib "$wpid")" \
    "$(cpu_ms "$wpid")" "$(awk '/^Threads/ {print $2}' "/proc/$wpid/status")" \
    "$(curl -s http://127.0.0.1:29090/metrics | awk '/^wsnorm_connections_active/ {s += $2} END {print s}')"
}

"$(dirname "$bin")/wsnorm-demo" backend --bind 127.0.0.1:28000 --quiet >/dev/null &
pids+=($!)
"$bin" --config "$config" --listen 127.0.0.1:28080 --admin 127.0.0.1:29090 \
  --upstream 127.0.0.1:28000 2>/tmp/wsnorm-measure.log &
wpid=$!
pids+=($wpid)
for _ in $(seq 1 100); do port_open 28080 && port_open 29090 && break; sleep 0.1; done
sleep 2
report "idle, just started"
curl -s -o /dev/null http://127.0.0.1:29090/readyz
sleep 5
report "idle, after 5 s"

python3 -u deploy/tools/ws_load.py --url ws://127.0.0.1:28080/ws --connections "$n" \
  --hold 5 --messages "$msgs" --big "$big" --after 5 | while read -r line; do
  echo "$line"
  case "$line" in
    "STAGE open"*) sleep 4; report "$n idle WebSockets" ;;
    "STAGE sent"*) sleep 2; report "after $((n * msgs)) messages" ;;
    "STAGE big"*) sleep 2; report "after $n x $big-byte messages" ;;
    "STAGE closed"*) sleep 2; report "all closed" ;;
  esac
done
sleep 1
report "end"
