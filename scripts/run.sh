#!/usr/bin/env bash
# Builds and runs wsnorm with the embedded default config (proxy :8080, admin :9090, backend
# 127.0.0.1:8000). If nothing listens on :8000 yet, the strict demo backend is started there and
# one incident message is sent through wsnorm so you can see it rewritten. Ctrl-C stops all.
# Extra arguments go to wsnorm (e.g. --config FILE). WSNORM_DEMO=0 skips the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --bin wsnorm --bin wsnorm-demo
bin=target/release/wsnorm
demo_bin=target/release/wsnorm-demo
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

demo=0
if [ "${WSNORM_DEMO:-1}" != 0 ] && [ $# -eq 0 ] && ! port_open 8000; then
  demo=1
  "$demo_bin" backend --bind 127.0.0.1:8000 &
  pids+=($!)
fi
"$bin" --log-format "${WSNORM_LOG_FORMAT:-text}" "$@" &
wsnorm_pid=$!
pids+=($wsnorm_pid)
for _ in $(seq 1 100); do port_open 8080 && break; sleep 0.1; done
if [ "$demo" = 1 ]; then
  echo
  echo "== demo: a client sends the incident message through wsnorm (ws://127.0.0.1:8080/ws) =="
  "$demo_bin" client --url ws://127.0.0.1:8080/ws || true
  echo "== wsnorm keeps serving on :8080 (metrics on http://127.0.0.1:9090/metrics); Ctrl-C stops =="
fi
wait "$wsnorm_pid"
