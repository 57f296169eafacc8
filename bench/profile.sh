#!/usr/bin/env bash
# Where wsnorm's CPU time and memory go, with the same setup as bench/compare.sh (wsnorm with
# threads = 1 on CPU 0; the wsnorm-load echo backend and load generator on CPU 1).
#
#   bench/profile.sh [--no-build] [--idle-conns N] [--keep]
#
#   1. syscalls per round trip (strace -c -f) for ping-pong with 1 and 16 messages in flight;
#   2. a flat CPU profile (perf record -e cpu-clock: this VM has no hardware counters), split
#      into kernel / wsnorm / libc and the top user-space symbols;
#   3. heap per idle connection by allocation site (heaptrack, peak), for N idle connections.
# Steps whose tool is missing are skipped (apt-get install strace linux-perf heaptrack).
# Output files stay in the printed directory with --keep.
set -eu  # no pipefail: `perf report | head` ends with SIGPIPE
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh
build=1; idle_conns=2000; keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --idle-conns) idle_conns=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
bench_binaries "$build"
port_base=${PORT_BASE:-19700}
echo_port=$((port_base + 1)); ws_port=$((port_base + 2)); admin_port=$((port_base + 3))
ports_free "$echo_port" "$ws_port" "$admin_port"
ulimit -n $((2 * idle_conns + 1000 > 10240 ? 2 * idle_conns + 1000 : 10240))

out=$scratch
if [ "$keep" = 1 ]; then KEEP_TMP=1; fi
sed -e 's/^threads = .*/threads = 1/' \
    -e "s/^max_connections = .*/max_connections = $((idle_conns + 1000))/" \
    config/wsnorm.toml >"$out/wsnorm.toml"

taskset -c 1 "$load_bin" echo --bind "127.0.0.1:$echo_port" 2>/dev/null &
pids+=($!)
wait_port "$echo_port"
start_wsnorm() { # [wrapper...]
  "$@" taskset -c 0 "$wsnorm_bin" --config "$out/wsnorm.toml" --listen "127.0.0.1:$ws_port" \
    --admin "127.0.0.1:$admin_port" --backend "127.0.0.1:$echo_port" --log-format json \
    2>>"$out/wsnorm.log" &
  pids+=($!)
  wait_port "$ws_port"
}
url="ws://127.0.0.1:$ws_port/ws"
load() { # k messages [extra args]
  local k=$1 m=$2; shift 2
  timeout 120 taskset -c 1 "$load_bin" pingpong --url "$url" --expect-rewrite -n 50 -k "$k" \
    -m "$m" --warmup 50 "$@"
}

start_wsnorm
ws_pid=${pids[-1]}
load 1 200 >/dev/null

echo "== syscalls per round trip (strace -c -f) =="
if command -v strace >/dev/null; then
  for k in 1 16; do
    strace -c -f -p "$ws_pid" -o "$out/strace-k$k.txt" 2>/dev/null &
    sp=$!
    sleep 0.5
    rt=$(load "$k" 400 | jq '.round_trips + 50 * 50')
    kill -INT "$sp"; wait "$sp" 2>/dev/null || true
    awk -v rt="$rt" -v k="$k" '$NF ~ /^(sendto|recvfrom|epoll_wait|writev|write|read)$/ {
        printf "  k=%-2s %-10s %8d calls  %.2f per round trip\n", k, $NF, $4, $4 / rt }' \
      "$out/strace-k$k.txt"
  done
else
  echo "  (strace missing: skipped)"
fi

echo "== CPU profile (perf record -e cpu-clock) =="
if command -v perf >/dev/null && perf record -e cpu-clock -o "$out/probe.data" true >/dev/null 2>&1; then
  for k in 1 16; do
    perf record -e cpu-clock -F 4000 -o "$out/perf-k$k.data" -p "$ws_pid" >/dev/null 2>&1 &
    pp=$!
    sleep 0.5
    load "$k" $((k == 1 ? 2000 : 4000)) --cpu-pid "$ws_pid" \
      | jq -r '"  k=\(.inflight): \(.msg_per_s|floor) round trips/s, \(.proxy_cpu_us_per_msg) us CPU per round trip"'
    kill -INT "$pp"; wait "$pp" 2>/dev/null || true
    echo "  -- k=$k by binary:"
    perf report -i "$out/perf-k$k.data" --stdio --no-children --sort dso 2>/dev/null \
      | grep -E '^ +[0-9]' | head -5 | sed 's/^/    /'
    echo "  -- k=$k top user-space symbols (% of all wsnorm CPU):"
    perf report -i "$out/perf-k$k.data" --stdio --no-children --sort sym \
      --dsos wsnorm,libc.so.6,'[vdso]' 2>/dev/null | grep -E '^ +[0-9]' | head -25 \
      | cut -c1-150 | sed 's/^/    /'
  done
else
  echo "  (perf missing or not permitted: skipped)"
fi

echo "== heap per idle connection (heaptrack, peak) =="
if command -v heaptrack >/dev/null && command -v heaptrack_print >/dev/null; then
  kill -TERM "$ws_pid" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$ws_pid" 2>/dev/null || break; sleep 0.1; done
  taskset -c 0 heaptrack -o "$out/heaptrack" "$wsnorm_bin" --config "$out/wsnorm.toml" \
    --listen "127.0.0.1:$ws_port" --admin "127.0.0.1:$admin_port" \
    --backend "127.0.0.1:$echo_port" --log-format json >/dev/null 2>>"$out/wsnorm.log" &
  ht_pid=$!; pids+=("$ht_pid")
  wait_port "$ws_port"
  timeout 60 taskset -c 1 "$load_bin" idle --url "$url" -n "$idle_conns" --touch \
    --settle-secs 1 --hold-secs 2 >"$out/idle.out" || true
  # heaptrack runs wsnorm as its child: stop that one, then let heaptrack write its file.
  child=$(pgrep -P "$ht_pid" -x "$(basename "$wsnorm_bin")" | head -n1 || true)
  if [ -n "$child" ]; then kill -TERM "$child"; fi
  for _ in $(seq 1 300); do kill -0 "$ht_pid" 2>/dev/null || break; sleep 0.1; done
  file=$(ls "$out"/heaptrack*.zst "$out"/heaptrack*.gz 2>/dev/null | head -n1 || true)
  if [ -n "$file" ]; then
    heaptrack_print -f "$file" --print-peaks 0 --print-allocators 0 --print-temporary 0 \
      --print-leaks 0 -F "$out/peak.folded" --flamegraph-cost-type peak >/dev/null 2>&1 || true
    # Group the peak by the innermost frame that says whose allocation it is.
    awk -v n="$idle_conns" '{
        bytes = $NF; $NF = ""; k = split($0, f, ";"); site = "other";
        for (i = k; i > 0; i--) {
          if (f[i] ~ /^(set_buffer|process_new_http|process_new|request_filter|reserve_inner|buffer_frame|box_new_uninit \(boxed|new<> \(core|spawn|set_socket_digest|internal_interval_at|from_partially_read|handshake|serve|run<>|init)/ || f[i] ~ /wsnorm::|websocket\.rs|relay|buf_reader|buf_writer|registration_set/) {
            site = f[i]
            if (i > 1) site = f[i-1] " > " site
            break
          }
        }
        sum[site] += bytes
      } END { for (s in sum) if (sum[s] / n >= 16) printf "%10.2f KiB/conn  %s\n", sum[s] / n / 1024, s }' \
      "$out/peak.folded" | sort -rn | head -15 | sed 's/^/  /'
  else
    echo "  (no heaptrack file)"
  fi
else
  echo "  (heaptrack missing: skipped)"
fi
