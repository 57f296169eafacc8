#!/usr/bin/env bash
# A/B of two wsnorm builds (or two configs of one build): proxy CPU per round trip in interleaved
# pairs, with fresh processes for every session, as PGO was measured (BENCHMARKS.md).
#
#   bench/ab.sh [--sessions N] [--rounds R] BIN_A BIN_B
#   (CONFIG_A / CONFIG_B: the config of each side, default config/wsnorm.toml with threads = 1;
#   with `rules = []` on one side, that side is not sent --expect-rewrite; LOAD_BIN as in
#   compare.sh)
#
# Each session starts A and B on CPU 0 (the echo backend and the load generator on CPU 1), then
# runs R rounds; a round runs K=1 (50 connections x 3,000 round trips) and K=16 (x 6,000) on
# both, the order alternating. Prints one JSON line per run, then per K the median over pairs of
# B/A (CPU per round trip, p99) and in how many pairs B was lower.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh
sessions=4; rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --sessions) sessions=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "unknown argument: $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
[ $# = 2 ] || { echo "usage: bench/ab.sh [--sessions N] [--rounds R] BIN_A BIN_B" >&2; exit 2; }
bins=("$1" "$2")
install_missing jq:jq taskset:util-linux
WSNORM_BIN=${bins[0]} bench_binaries 0
[ -x "${bins[1]}" ] || die "${bins[1]} is not executable"

port_base=${PORT_BASE:-19600}
echo_port=$((port_base + 1))
ports_free "$echo_port" $((port_base + 10)) $((port_base + 11)) $((port_base + 20)) $((port_base + 21))
sed -e 's/^threads = .*/threads = 1/' config/wsnorm.toml >"$scratch/wsnorm.toml"
configs=("${CONFIG_A:-$scratch/wsnorm.toml}" "${CONFIG_B:-$scratch/wsnorm.toml}")
taskset -c 1 "$load_bin" echo --bind "127.0.0.1:$echo_port" 2>"$scratch/echo.log" &
pids+=("$!")
wait_port "$echo_port"

runs=$scratch/runs.jsonl
for s in $(seq 1 "$sessions"); do
  side_pids=()
  for i in 0 1; do
    # The backend by its old variable, which builds from before `--backend` read too: a build
    # from before the rename can be side A (with CONFIG_A its own config file).
    WSNORM_UPSTREAM="127.0.0.1:$echo_port" taskset -c 0 "${bins[$i]}" --config "${configs[$i]}" \
      --listen "127.0.0.1:$((port_base + 10 + i))" --admin "127.0.0.1:$((port_base + 20 + i))" \
      --log-format json 2>>"$scratch/wsnorm-$i.log" &
    side_pids+=("$!"); pids+=("$!")
    wait_port $((port_base + 10 + i))
  done
  for r in $(seq 1 "$rounds"); do
    order="0 1"; [ $(((s + r) % 2)) = 0 ] && order="1 0"
    for k in 1 16; do
      m=3000; [ "$k" = 16 ] && m=6000
      for i in $order; do
        check=--expect-rewrite
        grep -q '^rules = \[\]' "${configs[$i]}" && check=""
        timeout 150 taskset -c 1 "$load_bin" pingpong --url "ws://127.0.0.1:$((port_base + 10 + i))/ws" \
          $check -n 50 -k "$k" -m "$m" --warmup 50 --max-secs 120 --cpu-pid "${side_pids[$i]}" \
          --label "$([ "$i" = 0 ] && echo A || echo B) k=$k s$s r$r" >"$scratch/run.json" \
          || die "load run failed"
        check_report "$scratch/run.json" "$(jq -r .label "$scratch/run.json")"
        jq -c '{label: .label, cpu: .proxy_cpu_us_per_msg, p99: .p99_us, msg_per_s: (.msg_per_s | floor)}' \
          "$scratch/run.json" | tee -a "$runs"
      done
    done
  done
  stop_procs "${side_pids[@]}" || true
done

jq -s -r '
  def median: sort | if length % 2 == 1 then .[length / 2 | floor]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;
  map(. + { side: (.label | split(" ")[0]), k: (.label | split(" ")[1]),
            pair: (.label | split(" ")[1:] | join(" ")) }) |
  group_by(.k)[] | . as $k |
  [group_by(.pair)[] | select(length == 2) | sort_by(.side) |
    { cpu: (.[1].cpu / .[0].cpu), p99: (.[1].p99 / .[0].p99) }] as $pairs |
  "\($k[0].k): B/A CPU per round trip \($pairs | map(.cpu) | median * 1000 | round / 1000) (B lower in \($pairs | map(select(.cpu < 1)) | length) of \($pairs | length) pairs), p99 \($pairs | map(.p99) | median * 1000 | round / 1000); medians A \($k | map(select(.side == "A") | .cpu) | median * 100 | round / 100) us, B \($k | map(select(.side == "B") | .cpu) | median * 100 | round / 100) us"
' "$runs"
