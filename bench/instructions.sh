#!/usr/bin/env bash
# User-space instructions per round trip, nginx against wsnorm, counted by valgrind's callgrind.
# Unlike CPU time on this shared VM (which moves by up to 2x between rounds), the count is the
# same on every run of the same binaries and inputs, so changes far below the noise of
# bench/compare.sh show. It does not see the kernel (about 70 % of either proxy's CPU time) nor
# cache misses: it ranks user-space changes, compare.sh stays the measure of the goals.
#
#   bench/instructions.sh [--no-build] [--conns N] [-k K] [--top N] [--cache]
#   (WSNORM_BIN / LOAD_BIN as in bench/compare.sh; TARGETS="wsnorm" skips nginx)
#
# Each proxy runs alone under callgrind (nginx with one process, master_process off) in front of
# the wsnorm-load echo backend. Two ping-pong runs of M1 and M2 round trips per connection are
# counted separately; (I2 - I1) / (N * (M2 - M1)) is the cost of one round trip, with connection
# set-up and start-up cancelled out. The top functions of wsnorm's M2 run are printed (--top).
# --cache also simulates this machine's caches per core (L1i and L1d 32 KiB 8-way, L2 1 MiB
# 16-way, 64 B lines) and reports L1 instruction and data misses per round trip: without the
# kernel in between, an L1i miss per round trip means code that does not fit in L1i at all.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. bench/lib.sh

build=1; conns=50; k=1; top=25; cache=()
m1=${M1:-100}; m2=${M2:-300}
targets=${TARGETS:-"nginx wsnorm"}
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --conns) conns=$2; shift ;;
    -k) k=$2; shift ;;
    --top) top=$2; shift ;;
    --cache) cache=(--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64) ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$m2" -gt "$m1" ] || { echo "M2 must be larger than M1" >&2; exit 2; }

install_missing valgrind:valgrind nginx:nginx jq:jq
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

bench_binaries "$build"

port_base=${PORT_BASE:-19500}
echo_port=$((port_base + 1)); proxy_port=$((port_base + 2)); admin_port=$((port_base + 3))
tmp=$scratch
ports_free $echo_port $proxy_port $admin_port

taskset -c 1 "$load_bin" echo --bind "127.0.0.1:$echo_port" 2>"$tmp/echo.log" &
pids+=("$!")
wait_port "$echo_port"

bench_nginx_conf "$tmp/nginx" "$proxy_port" "$echo_port" 4096 single
sed -e 's/^threads = .*/threads = 1/' config/wsnorm.toml >"$tmp/wsnorm.toml"
grep -q '^threads = 1$' "$tmp/wsnorm.toml" || die "could not set threads = 1"

# The events counted since the last callgrind dump ("Ir=... I1mr=..."), from the dump's totals.
dump_totals() { # pid dump-number
  callgrind_control -d "$1" >/dev/null
  local f
  for _ in $(seq 1 100); do
    f=$(ls "$tmp"/callgrind.out."$1".* 2>/dev/null | sort -t. -k4 -n | sed -n "${2}p")
    [ -n "$f" ] && grep -q '^totals:' "$f" 2>/dev/null && break
    sleep 0.2
  done
  [ -n "$f" ] || die "no callgrind dump $2 from $1"
  awk '/^events:/ { for (i = 2; i <= NF; i++) name[i] = $i }
       /^totals:/ { for (i = 2; i <= NF; i++) printf "%s=%s ", name[i], $i; print "" }' "$f"
}
event() { # name totals
  local pair
  for pair in $2; do [ "${pair%%=*}" = "$1" ] && { echo "${pair#*=}"; return; }; done
  echo 0
}

pingpong() { # target messages label
  local sp="--subprotocol=" check=""
  [ "$1" = wsnorm ] && { sp="--subprotocol=agent_chat"; check="--expect-rewrite"; }
  timeout 900 taskset -c 1 "$load_bin" pingpong --url "ws://127.0.0.1:$proxy_port/ws" "$sp" $check \
    -n "$conns" -k "$k" -m "$2" --warmup 0 --connect-timeout-secs 60 --reply-timeout-secs 60 --max-secs 800 --label "$3" \
    >"$tmp/$3.json" || die "load run $3 failed"
  check_report "$tmp/$3.json" "$3"
}

results=()
for t in $targets; do
  case "$t" in
    nginx) cmd=("$nginx_bin" -p "$tmp/nginx" -e "$tmp/nginx/logs/error.log" -c "$tmp/nginx/nginx.conf") ;;
    wsnorm) cmd=("$wsnorm_bin" --config "$tmp/wsnorm.toml" --listen "127.0.0.1:$proxy_port"
                 --admin "127.0.0.1:$admin_port" --backend "127.0.0.1:$echo_port" --log-format json) ;;
    *) die "unknown target $t" ;;
  esac
  taskset -c 0 valgrind --tool=callgrind --instr-atstart=no "${cache[@]}" \
    --callgrind-out-file="$tmp/callgrind.out.%p" "${cmd[@]}" 2>"$tmp/$t.log" &
  pid=$!; pids+=("$pid")
  wait_port "$proxy_port" 120
  pingpong "$t" 5 "warmup-$t"
  callgrind_control -i on "$pid" >/dev/null
  pingpong "$t" "$m1" "$t-m1"
  e1=$(dump_totals "$pid" 1)
  pingpong "$t" "$m2" "$t-m2"
  e2=$(dump_totals "$pid" 2)
  callgrind_control -i off "$pid" >/dev/null
  i1=$(event Ir "$e1"); i2=$(event Ir "$e2")
  per=$(( (i2 - i1) / (conns * (m2 - m1)) ))
  log "$t: $i1 instructions for $((conns * m1)) round trips, $i2 for $((conns * m2)): $per per round trip"
  results+=("$t=$per")
  if [ ${#cache[@]} -gt 0 ]; then
    misses=""
    for ev in I1mr D1mr D1mw; do
      x=$(awk -v a="$(event "$ev" "$e1")" -v b="$(event "$ev" "$e2")" -v n=$((conns * (m2 - m1))) \
        'BEGIN { printf "%.1f", (b - a) / n }')
      results+=("$t.$ev=$x")
      misses+=" $ev $x"
    done
    log "$t: L1 misses per round trip:$misses"
  fi
  if [ "$t" = wsnorm ] && [ "$top" -gt 0 ]; then
    f=$(ls "$tmp"/callgrind.out."$pid".* | sort -t. -k4 -n | sed -n 2p)
    callgrind_annotate --inclusive=no "$f" 2>/dev/null | sed -n "1,$((top + 25))p" \
      | grep -E '^ *[0-9,]+ \(' | head -n "$top" >"$tmp/top.txt" || true
    log "wsnorm's top functions, self instructions over $((conns * m2)) round trips:"
    cat "$tmp/top.txt" >&2
  fi
  stop_procs "$pid" || true
  for _ in $(seq 1 50); do port_open "$proxy_port" || break; sleep 0.1; done
done

printf '%s\n' "${results[@]}" | jq -R 'split("=") | {(.[0]): (.[1] | tonumber)}' | jq -s \
  --argjson conns "$conns" --argjson k "$k" --argjson m1 "$m1" --argjson m2 "$m2" '
  add as $all | ($all | with_entries(select(.key | contains(".") | not))) as $r |
  { connections: $conns, in_flight: $k, round_trips: [$m1, $m2],
    user_instructions_per_round_trip: $r,
    ratio: (if $r.nginx and $r.wsnorm then ($r.wsnorm / $r.nginx * 100 | round / 100) else null end) } +
  if ($all | keys | any(contains("."))) then
    { l1_misses_per_round_trip: ($all | to_entries | map(select(.key | contains("."))) |
        map(.key |= split(".")) | group_by(.key[0]) |
        map({ (.[0].key[0]): (map({ (.key[1]): .value }) | add) }) | add) }
  else {} end'
