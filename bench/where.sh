#!/usr/bin/env bash
# Where each proxy's CPU goes per round trip, nginx beside wsnorm: a sampled CPU profile
# (`perf record -e cpu-clock -g`, kernel call chains) of each proxy under compare.sh's ping-pong
# load, the samples split by what the proxy was doing and scaled to its CPU per round trip:
#   user     its own code and libc, everything outside the kernel, of which
#            zlib: in zlib-ng (inflating and deflating, permessage-deflate);
#   recv     in recvfrom, of which
#            ack: sending the ACK that the read itself triggers (tcp_recvmsg -> __tcp_transmit_skb),
#            backlog: processing packets that arrived while the read held the socket (release_sock);
#   send     in sendto (on loopback this includes delivering the segment to the receiver);
#   epoll    in epoll_wait, of which sleep: blocked in schedule() until woken;
#   other    everything else in the kernel (other syscalls, interrupts).
#
#   bench/where.sh [--no-build] [--rounds N] [-k "1 16"] [--targets "nginx wsnorm no_rules tcp_relay"]
#     [--deflate] [--out FILE]   (haproxy is a target too)
#   --deflate: every connection and the echo backend compress each message on its own, as in
#   bench/deflate.sh's per_message set (the frames wsnorm's defaults negotiate, so nginx and
#   HAProxy pass the same ones through; tcp_relay is then left out).
#   (WSNORM_BIN / LOAD_BIN as in bench/compare.sh; FREQ: samples per second, default 499)
#
# Same set-up as compare.sh: each proxy a fresh process every round on CPU 0, the echo backend
# and the load generator on CPU 1, 50 connections. Sampling disturbs what it measures: at
# 10 kHz every proxy relayed ~20 % more round trips per second on this VM and wsnorm's CPU per
# round trip fell by 6 %; at 499 Hz the figures match unprofiled runs, with ~1,500 samples per
# target and K (a share is good to ~1 point). Prints the mean over rounds per target and K and
# writes every run to a JSON file (default target/bench-results/where-DATE.json, outside git).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh
build=1; rounds=2; ks="1 16"; targets="nginx wsnorm no_rules tcp_relay"; out=""; deflate=""
freq=${FREQ:-499}
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --rounds) rounds=$2; shift ;;
    -k) ks=$2; shift ;;
    --targets) targets=$2; shift ;;
    --out) out=$2; shift ;;
    --deflate) deflate="--deflate --deflate-offer $per_message_offer" ;;
    -h|--help) sed -n '2,/^set /{/^#/p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$out" ] || out="$root/target/bench-results/where-$(date -u +%Y%m%d-%H%M%S).json"
mkdir -p "$(dirname "$out")"
bench_prerequisites perf:linux-perf
perf record -e cpu-clock -o "$scratch/probe.data" true >/dev/null 2>&1 \
  || die "perf record is not permitted here (kernel.perf_event_paranoid?)"
bench_binaries "$build"

port_base=${PORT_BASE:-19500}
echo_port=$((port_base + 1))
ports_free "$echo_port"
[ -z "$deflate" ] || targets=$(echo "$targets" | tr ' ' '\n' | grep -vx tcp_relay | paste -sd' ')
# shellcheck disable=SC2086
taskset -c 1 "$load_bin" echo ${deflate:+--deflate} --bind "127.0.0.1:$echo_port" 2>"$scratch/echo.log" &
pids+=("$!")
wait_port "$echo_port"
bench_targets_configure "$scratch" "$port_base" "$echo_port" 1024

# The kernel call chain of every sample decides its bucket; the first frame is the sampled one.
split_samples() { # perf-data cpu-us-per-round-trip
  perf script -i "$1" -F ip,sym 2>/dev/null | awk -v us="$2" '
    BEGIN { RS = ""; FS = "\n" }
    {
      n++
      split($1, leaf, " ")
      if (leaf[1] !~ /^ffffffff/) {
        c["user"]++
        if (leaf[2] ~ /zng_|inflate|deflate|chunk(copy|memset|unroll)|longest_match|compare256|adler32|crc32/) c["user_zlib"]++
        next
      }
      chain = " "
      for (i = 1; i <= NF; i++) { split($i, f, " "); chain = chain f[2] " " }
      if (chain ~ / __x64_sys_recvfrom /) {
        c["recv"]++
        if (chain ~ / (__release_sock|release_sock|__sk_flush_backlog) /) c["recv_backlog"]++
        else if (chain ~ / __tcp_transmit_skb (.* )?tcp_recvmsg_locked /) c["recv_ack"]++
      } else if (chain ~ / __x64_sys_sendto /) c["send"]++
      else if (chain ~ / __x64_sys_epoll_wait /) {
        c["epoll"]++
        if (chain ~ / schedule /) c["epoll_sleep"]++
      } else c["other"]++
    }
    END {
      printf "{\"samples\": %d", n
      split("user user_zlib recv recv_ack recv_backlog send epoll epoll_sleep other", k, " ")
      for (i = 1; i <= 9; i++) printf ", \"%s\": %.4f", k[i], (n ? c[k[i]] / n * us : 0)
      print "}"
    }'
}

runs=$scratch/runs.jsonl
for r in $(seq 1 "$rounds"); do
  bench_targets_start
  order=$targets
  [ $((r % 2)) = 0 ] && order=$(echo "$targets" | tr ' ' '\n' | tac | tr '\n' ' ')
  for k in $ks; do
    m=3000; [ "$k" -gt 1 ] && m=16000
    for t in $order; do
      args="$(bench_target_args "$t") $deflate"
      cpu_pids=$(echo "$args" | grep -o -- '--cpu-pid [0-9]*' | awk '{print $2}' | paste -sd,)
      # shellcheck disable=SC2086
      timeout 60 taskset -c 1 "$load_bin" pingpong $args -n 50 -k 1 -m 200 --warmup 10 \
        >"$scratch/warm.json" || die "warm-up of $t failed"
      check_report "$scratch/warm.json" "warm-up of $t"
      perf record -e cpu-clock -g -F "$freq" -p "$cpu_pids" -o "$scratch/perf.data" \
        >/dev/null 2>&1 &
      pp=$!
      sleep 0.5
      # shellcheck disable=SC2086
      timeout 150 taskset -c 1 "$load_bin" pingpong $args -n 50 -k "$k" -m "$m" --warmup 50 \
        --max-secs 120 --label "$t k=$k round $r" >"$scratch/run.json" \
        || die "load run $t k=$k failed"
      kill -INT "$pp"; wait "$pp" 2>/dev/null || true
      check_report "$scratch/run.json" "$t k=$k round $r"
      us=$(jq '.proxy_cpu_us_per_msg' "$scratch/run.json")
      split_samples "$scratch/perf.data" "$us" \
        | jq -c --arg t "$t" --argjson k "$k" --argjson r "$r" --slurpfile run "$scratch/run.json" \
          '{target: $t, k: $k, round: $r, cpu_us: $run[0].proxy_cpu_us_per_msg,
            round_trips_per_s: ($run[0].msg_per_s | floor)} + .' | tee -a "$runs" >&2
    done
  done
  bench_targets_stop
done

jq -s --argjson head "$(bench_header)" --argjson freq "$freq" \
  --argjson deflate "$([ -n "$deflate" ] && echo true || echo false)" \
  '$head + {sample_hz: $freq, deflate: $deflate, runs: .}' "$runs" >"$out"
echo "CPU per round trip in µs, mean of $rounds round(s), by where it went ($freq samples/s):"
jq -r '
  def f: . * 100 | round / 100 | tostring;
  "| K | target | round trips/s | CPU | user | user: zlib | recv | recv: ack | recv: backlog | send | epoll | epoll: sleep | other |",
  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  (.runs | group_by([.k, .target])[] | . as $g | ($g | length) as $n |
    def mean($f): ($g | map(.[$f]) | add / $n);
    "| \($g[0].k) | \($g[0].target) | \(mean("round_trips_per_s") | floor) | \(mean("cpu_us") | f) | \(mean("user") | f) | \(mean("user_zlib") | f) | \(mean("recv") | f) | \(mean("recv_ack") | f) | \(mean("recv_backlog") | f) | \(mean("send") | f) | \(mean("epoll") | f) | \(mean("epoll_sleep") | f) | \(mean("other") | f) |")
' "$out"
log "results: $out"
