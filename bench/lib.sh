# Shared by the bench scripts (sourced, from the repository root): messages, installing what
# is missing, the processes a script started (all killed on exit) and waiting for ports.

log() { printf '%s\n' "$*" >&2; }
die() { log "$(basename "$0"): $*"; exit 1; }

# Installs, with apt-get, the package of each command that is missing: bench_need CMD:PKG...
bench_need() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  log "installing ${need[*]} with apt-get"
  local sudo_=""
  [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need[@]}" >/dev/null
}

# Processes to stop on exit (append with pids+=("$!")), and the scratch directory removed then
# unless KEEP_TMP=1.
pids=()
bench_tmp=$(mktemp -d "/tmp/wsnorm-$(basename "$0" .sh).XXXXXX")
bench_cleanup() {
  local p alive
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "files kept in $bench_tmp"; else rm -rf "$bench_tmp"; fi
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# Drops an exited pid from the kill list (it could be reused).
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# Stops processes this script started: SIGTERM to all, then for each up to 15 s to exit before
# SIGKILL; reaped and dropped from the kill list. bench_stop PID... fails if any needed SIGKILL.
bench_stop() {
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
# Fails unless nothing listens on any of the ports: bench_ports_free PORT...
bench_ports_free() {
  local p
  for p in "$@"; do
    ! port_open "$p" || die "port $p is in use (set PORT_BASE)"
  done
}
wait_port() { # port [seconds]
  for _ in $(seq 1 $((${2:-10} * 10))); do port_open "$1" && return 0; sleep 0.1; done
  die "nothing listens on port $1 after ${2:-10} s (see $bench_tmp)"
}

# nginx as a pass-through WebSocket proxy with one worker, everything under DIR:
# bench_nginx_conf DIR LISTEN_PORT UPSTREAM_PORT CONNECTIONS [single] ("single": no master
# process, e.g. to run it under valgrind). Start it with
# nginx -p DIR -e DIR/logs/error.log -c DIR/nginx.conf
bench_nginx_conf() {
  mkdir -p "$1/logs" "$1/tmp"
  local master=""
  [ "${5:-}" = single ] && master="master_process off;"
  cat >"$1/nginx.conf" <<EOF
worker_processes 1;
$master
worker_rlimit_nofile $4;
daemon off;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events {
    worker_connections $4;
}
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://127.0.0.1:$3;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host \$host;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }
    }
}
EOF
}

# The binaries measured: wsnorm as shipped (scripts/build-pgo.sh: the `dist` profile with
# profile-guided optimisation, target/pgo/wsnorm), the load tool and echo backend from the plain
# `dist` build. bench_binaries BUILD (1: build them first) sets wsnorm_bin and load_bin;
# WSNORM_BIN / LOAD_BIN name other builds (WSNORM_BIN=target/dist/wsnorm: without PGO).
bench_binaries() {
  if [ "$1" = 1 ]; then
    cargo build --profile dist --bin wsnorm-load >&2
    [ -n "${WSNORM_BIN:-}" ] || bash scripts/build-pgo.sh >&2
  fi
  wsnorm_bin=${WSNORM_BIN:-$root/target/pgo/wsnorm}
  load_bin=${LOAD_BIN:-$root/target/dist/wsnorm-load}
  [ -x "$wsnorm_bin" ] && [ -x "$load_bin" ] \
    || die "binaries missing: $wsnorm_bin, $load_bin (build first, or drop --no-build)"
}

# Fails unless the load tool's report FILE has every echo right (no errors, no mismatches):
# bench_check_report FILE WHAT
bench_check_report() {
  jq -e '.errors == 0 and .mismatches == 0' "$1" >/dev/null 2>&1 \
    || die "$2: $(jq -r '"\(.errors) errors, \(.mismatches) mismatches: \(.first_error)"' "$1" 2>/dev/null \
      || cat "$1")"
}

# The proxies compared, each a fresh process on CPU 0 in front of the echo backend: nginx
# (1 worker), wsnorm (the shipped config with threads = 1), wsnorm with no rules ("passthrough":
# frames are still parsed, checked and re-framed, messages not parsed) and a plain tokio TCP
# relay (`wsnorm-load relay`: what a proxy on tokio costs before it looks at a frame).
# bench_targets_configure DIR PORT_BASE ECHO_PORT FDS writes their configs under DIR and takes
# the ports PORT_BASE+2..+7; then bench_targets_start (sets nginx_pid, nginx_worker,
# wsnorm_pid, pass_pid, relay_pid), bench_targets_stop, and bench_target_args TARGET: the load
# tool's options for TARGET (its URL, subprotocol, check and CPU pids).
bench_targets_configure() {
  targets_dir=$1; targets_echo_port=$3
  nginx_port=$(($2 + 2)); wsnorm_port=$(($2 + 3)); wsnorm_admin_port=$(($2 + 4))
  pass_port=$(($2 + 5)); pass_admin_port=$(($2 + 6)); relay_port=$(($2 + 7))
  bench_ports_free $nginx_port $wsnorm_port $wsnorm_admin_port $pass_port $pass_admin_port $relay_port
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  bench_nginx_conf "$1/nginx" "$nginx_port" "$3" "$4"
  sed -e 's/^threads = .*/threads = 1/' -e "s/^max_connections = .*/max_connections = $4/" \
    config/wsnorm.toml >"$1/wsnorm.toml"
  grep -q '^threads = 1$' "$1/wsnorm.toml" || die "could not set threads = 1"
  { echo 'rules = []'
    awk '/^\[\[rules\]\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' "$1/wsnorm.toml"
  } >"$1/passthrough.toml"
}
bench_start_wsnorm() { # pid-variable config port admin-port log
  taskset -c 0 "$wsnorm_bin" --config "$2" --listen "127.0.0.1:$3" --admin "127.0.0.1:$4" \
    --upstream "127.0.0.1:$targets_echo_port" --log-format json 2>>"$5" &
  printf -v "$1" '%s' "$!"
  pids+=("$!")
  wait_port "$3"
}
bench_targets_start() {
  local d=$targets_dir
  taskset -c 0 "$nginx_bin" -p "$d/nginx" -e "$d/nginx/logs/error.log" -c "$d/nginx/nginx.conf" &
  nginx_pid=$!; pids+=("$nginx_pid")
  wait_port "$nginx_port"
  nginx_worker=""
  for _ in $(seq 1 50); do
    nginx_worker=$(pgrep -P "$nginx_pid" | head -n1 || true)
    [ -n "$nginx_worker" ] && break
    sleep 0.1
  done
  [ -n "$nginx_worker" ] || die "no nginx worker process"
  bench_start_wsnorm wsnorm_pid "$d/wsnorm.toml" "$wsnorm_port" "$wsnorm_admin_port" "$d/wsnorm.log"
  bench_start_wsnorm pass_pid "$d/passthrough.toml" "$pass_port" "$pass_admin_port" "$d/passthrough.log"
  taskset -c 0 "$load_bin" relay --bind "127.0.0.1:$relay_port" \
    --upstream "127.0.0.1:$targets_echo_port" 2>>"$d/relay.log" &
  relay_pid=$!; pids+=("$relay_pid")
  wait_port "$relay_port"
}
bench_targets_stop() { bench_stop "$nginx_pid" "$wsnorm_pid" "$pass_pid" "$relay_pid" || true; }
# Only wsnorm is offered agent_chat (the echo backend selects none) and only wsnorm with rules
# rewrites; the others echo as sent.
bench_target_args() {
  case "$1" in
    nginx) echo "--url ws://127.0.0.1:$nginx_port/ws --subprotocol= --cpu-pid $nginx_pid --cpu-pid $nginx_worker" ;;
    wsnorm) echo "--url ws://127.0.0.1:$wsnorm_port/ws --subprotocol=agent_chat --expect-rewrite --cpu-pid $wsnorm_pid" ;;
    passthrough) echo "--url ws://127.0.0.1:$pass_port/ws --subprotocol=agent_chat --cpu-pid $pass_pid" ;;
    tcp_relay) echo "--url ws://127.0.0.1:$relay_port/ws --subprotocol= --cpu-pid $relay_pid" ;;
    *) die "unknown target $1" ;;
  esac
}
