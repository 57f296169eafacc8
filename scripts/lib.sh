# Shared by scripts/build-pgo.sh, the bench scripts, deploy/tools/validate.sh and measure.sh
# (sourced, from the repository root): messages, installing what is missing, the processes a
# script started (all stopped on exit), a scratch directory, waiting for ports, and checking
# the load tool's reports.

log() { printf '%s\n' "$*" >&2; }
die() { log "$(basename "$0"): $*"; exit 1; }

# Installs, with apt-get, the package of each command that is missing: install_missing CMD:PKG...
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  apt_install "${need[@]}"
}

# Installs Debian packages with apt-get (sudo when not root): apt_install PKG...
apt_install() {
  log "installing $* with apt-get"
  local sudo_=""
  [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "$@" >/dev/null
}

# Processes to stop on exit (append with pids+=("$!")), and the scratch directory removed then
# unless KEEP_TMP=1.
pids=()
scratch=$(mktemp -d "/tmp/wsnorm-$(basename "$0" .sh).XXXXXX")
cleanup_on_exit() {
  local p alive
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "files kept in $scratch"; else rm -rf "$scratch"; fi
}
trap cleanup_on_exit EXIT
trap 'exit 130' INT TERM

# Drops an exited pid from the kill list (it could be reused).
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# Stops processes this script started: SIGTERM to all, then for each up to 15 s to exit before
# SIGKILL; reaped and dropped from the kill list. stop_procs PID... fails if any needed SIGKILL.
stop_procs() {
  local p clean=0
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "$@"; do
    for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; clean=1; fi
    wait "$p" 2>/dev/null || true
    forget "$p"
  done
  return "$clean"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Fails unless nothing listens on any of the ports: ports_free PORT...
ports_free() {
  local p
  for p in "$@"; do
    ! port_open "$p" || die "port $p is in use (set PORT_BASE)"
  done
}
wait_port() { # port [seconds]
  for _ in $(seq 1 $((${2:-10} * 10))); do port_open "$1" && return 0; sleep 0.1; done
  die "nothing listens on port $1 after ${2:-10} s (see $scratch)"
}

# Fails unless the load tool's report FILE has every echo right (no errors, no mismatches):
# check_report FILE WHAT
check_report() {
  jq -e '.errors == 0 and .mismatches == 0' "$1" >/dev/null 2>&1 \
    || die "$2: $(jq -r '"\(.errors) errors, \(.mismatches) mismatches: \(.first_error)"' "$1" 2>/dev/null \
      || cat "$1")"
}
