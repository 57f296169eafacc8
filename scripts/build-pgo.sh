#!/usr/bin/env bash
# Builds wsnorm as shipped (`dist` profile) with profile-guided optimisation.
#
#   scripts/build-pgo.sh [--out DIR] [--instrumented-only]
#   (default DIR: target/pgo; the binary is DIR/wsnorm, its profile DIR/wsnorm.profdata;
#   --instrumented-only stops after step 1: the container image caches that layer)
#
# 1. an instrumented `dist` build (-Cprofile-generate) in target/pgo-gen;
# 2. training (~15 s): that binary with the embedded default config in front of the wsnorm-load
#    echo backend, ping-pong through it with 1 and 16 messages in flight (every echo checked), a
#    burst of handshakes, the admin endpoints; a second one in front of the demo backend, 3,000
#    plain HTTP requests; then SIGTERM (the profile is written at exit);
# 3. `llvm-profdata merge` (rustup's llvm-tools: it must match rustc's LLVM) and the `dist`
#    build again with -Cprofile-use.
# Each build is a clean one (RUSTFLAGS differ from a plain build), and rustc tracks the profile
# file, so a new profile rebuilds every crate of step 3: ~10 min in all on 2 cores.
# Why (BENCHMARKS.md): 22 % fewer user-space instructions per round trip, the code of a round
# trip laid out to fit in L1i (callgrind's cache model: 235 misses per round trip, then 4), and
# ~6 % less proxy CPU per round trip at K=1 in interleaved pairs with fresh processes.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/target/pgo
instrumented_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    --instrumented-only) instrumented_only=1 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
. scripts/lib.sh
bash scripts/setup.sh
install_missing jq:jq curl:curl

host=$(rustc -vV | sed -n 's/^host: //p')
sysroot=$(rustc --print sysroot)
profdata="$sysroot/lib/rustlib/$host/bin/llvm-profdata"
if [ ! -x "$profdata" ]; then
  log "installing rustup's llvm-tools (llvm-profdata matching rustc's LLVM)"
  rustup component add llvm-tools
fi
[ -x "$profdata" ] || die "no $profdata"

# A fixed path: RUSTFLAGS that differ from the last build rebuild everything.
data=$root/target/pgo-gen/profiles
rm -rf "$data"
# --target keeps build scripts and proc macros uninstrumented (RUSTFLAGS then reach only the
# target's crates).
log "build-pgo: instrumented build"
RUSTFLAGS="-Cprofile-generate=$data" cargo build --locked --profile dist --target "$host" \
  --target-dir target/pgo-gen --bin wsnorm --bin wsnorm-load --bin wsnorm-demo >&2
[ "$instrumented_only" = 0 ] || exit 0
gen=target/pgo-gen/$host/dist
# Only wsnorm as a proxy is trained: the load tool, the echo and the demo backend write their
# profiles elsewhere, and those are not merged.
load_bin=$scratch/wsnorm-load
cp "$gen/wsnorm-load" "$load_bin"
untrained="$scratch/untrained-%p.profraw"

port_base=${PORT_BASE:-19800}
echo_port=$((port_base + 1)); ws_port=$((port_base + 2)); admin_port=$((port_base + 3))
demo_port=$((port_base + 4)); http_port=$((port_base + 5)); http_admin_port=$((port_base + 6))
ports_free "$echo_port" "$ws_port" "$admin_port" "$demo_port" "$http_port" "$http_admin_port"
LLVM_PROFILE_FILE=$untrained "$load_bin" echo --bind "127.0.0.1:$echo_port" \
  2>"$scratch/echo.log" &
pids+=("$!")
LLVM_PROFILE_FILE=$untrained "$gen/wsnorm-demo" backend --bind "127.0.0.1:$demo_port" --quiet \
  >"$scratch/demo.log" 2>&1 &
pids+=("$!")
wait_port "$echo_port"
wait_port "$demo_port"
# wsnorm with the embedded default config: in front of the echo backend for WebSockets, and a
# second process in front of the demo backend for plain HTTP.
trained=()
start_trained() { # port admin-port backend-port
  LLVM_PROFILE_FILE="$data/wsnorm-%p.profraw" "$gen/wsnorm" --listen "127.0.0.1:$1" \
    --admin "127.0.0.1:$2" --backend "127.0.0.1:$3" --log-format json 2>>"$scratch/wsnorm.log" &
  trained+=("$!"); pids+=("$!")
  wait_port "$1"
}
start_trained "$ws_port" "$admin_port" "$echo_port"
start_trained "$http_port" "$http_admin_port" "$demo_port"

train() { # label args...
  local label=$1; shift
  LLVM_PROFILE_FILE=$untrained "$load_bin" pingpong \
    --url "ws://127.0.0.1:$ws_port/ws" --expect-rewrite --max-secs 120 "$@" \
    >"$scratch/$label.json" || die "training run $label failed"
  check_report "$scratch/$label.json" "training run $label"
}
log "build-pgo: training"
train k1 -n 50 -k 1 -m 4000
train k16 -n 50 -k 16 -m 2000
train handshakes -n 500 -k 1 -m 2 --warmup 0
# Plain HTTP, keep-alive (curl reuses its connection across a URL range).
curl -fsS "http://127.0.0.1:$http_port/health?n=[1-2000]" >/dev/null \
  || die "HTTP training through wsnorm failed"
curl -fsS -X POST --data-binary '{"hello":"world"}' "http://127.0.0.1:$http_port/api/echo?n=[1-1000]" \
  >/dev/null || die "HTTP training through wsnorm failed"
for path in metrics healthz readyz; do
  curl -fsS "http://127.0.0.1:$admin_port/$path" -o /dev/null
done
# The profile is written at exit.
stop_procs "${trained[@]}" || die "wsnorm did not exit on SIGTERM"
ls "$data"/wsnorm-*.profraw >/dev/null 2>&1 || die "no profile written"
mkdir -p target/pgo-use
merged=$root/target/pgo-use/wsnorm.profdata
"$profdata" merge -o "$merged" "$data"/wsnorm-*.profraw

log "build-pgo: optimised build"
RUSTFLAGS="-Cprofile-use=$merged" cargo build --locked --profile dist \
  --target "$host" --target-dir target/pgo-use --bin wsnorm >&2
mkdir -p "$out"
# Replaced, not overwritten: the old binary may still be running.
cp "target/pgo-use/$host/dist/wsnorm" "$out/wsnorm.new"
mv -f "$out/wsnorm.new" "$out/wsnorm"
cp "$merged" "$out/wsnorm.profdata"
log "build-pgo: $out/wsnorm"
