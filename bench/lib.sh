# Shared by the bench scripts (sourced, from the repository root): the helpers of
# scripts/lib.sh (messages, installing what is missing, the processes a script started, all
# killed on exit, a scratch directory, waiting for ports), plus nginx's and HAProxy's configs,
# the binaries measured and the proxies compared.
. scripts/lib.sh

# nginx as a pass-through WebSocket proxy with one worker, everything under DIR:
# bench_nginx_conf DIR LISTEN_PORT BACKEND_PORT CONNECTIONS [single] ("single": no master
# process, e.g. to run it under valgrind). worker_connections is twice the descriptors: with
# exactly as many, 9,000 proxied connections ran out ("worker_connections are not enough") with
# descriptors to spare. Start it with
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
    worker_connections $(($4 * 2));
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

# HAProxy as a pass-through WebSocket proxy with one thread, in the foreground (-db: one
# process, no master): bench_haproxy_conf FILE LISTEN_PORT BACKEND_PORT FDS. It holds two
# descriptors per proxied connection; ulimit-n is set rather than derived from maxconn, which
# would ask for more than FDS. After the upgrade only `timeout tunnel` applies.
bench_haproxy_conf() {
  cat >"$1" <<EOF
global
    nbthread 1
    ulimit-n $4
    maxconn $((($4 - 100) / 2))
defaults
    mode http
    maxconn $((($4 - 100) / 2))
    timeout connect 10s
    timeout client 3600s
    timeout server 3600s
    timeout tunnel 3600s
frontend ws
    bind 127.0.0.1:$2
    default_backend echo
backend echo
    server echo 127.0.0.1:$3
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

# The proxies compared, each a fresh process on CPU 0 in front of the echo backend: nginx
# (1 worker), HAProxy (1 thread), wsnorm (the shipped config with threads = 1), wsnorm with no
# rules ("passthrough": frames are still parsed, checked and re-framed, messages not parsed) and
# a plain tokio TCP relay (`wsnorm-load relay`: what a proxy on tokio costs before it looks at a
# frame). bench_targets_configure DIR PORT_BASE ECHO_PORT FDS writes their configs under DIR
# and takes the ports PORT_BASE+2..+8; then bench_targets_start (sets nginx_pid, nginx_worker,
# haproxy_pid, wsnorm_pid, pass_pid, relay_pid), bench_targets_stop, bench_target_args TARGET:
# the load tool's options for TARGET (its URL, subprotocol, check and CPU pids), and
# bench_target_pids TARGET: its processes (nginx: master and worker).
bench_targets_configure() {
  targets_dir=$1; targets_echo_port=$3
  nginx_port=$(($2 + 2)); wsnorm_port=$(($2 + 3)); wsnorm_admin_port=$(($2 + 4))
  pass_port=$(($2 + 5)); pass_admin_port=$(($2 + 6)); relay_port=$(($2 + 7))
  haproxy_port=$(($2 + 8))
  ports_free $nginx_port $wsnorm_port $wsnorm_admin_port $pass_port $pass_admin_port $relay_port \
    $haproxy_port
  nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
  haproxy_bin=$(command -v haproxy || echo /usr/sbin/haproxy)
  bench_nginx_conf "$1/nginx" "$nginx_port" "$3" "$4"
  bench_haproxy_conf "$1/haproxy.cfg" "$haproxy_port" "$3" "$4"
  "$haproxy_bin" -c -q -f "$1/haproxy.cfg" || die "haproxy refuses $1/haproxy.cfg"
  sed -e 's/^threads = .*/threads = 1/' -e "s/^max_connections = .*/max_connections = $4/" \
    config/wsnorm.toml >"$1/wsnorm.toml"
  grep -q '^threads = 1$' "$1/wsnorm.toml" || die "could not set threads = 1"
  { echo 'rules = []'
    awk '/^\[\[rules\]\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' "$1/wsnorm.toml"
  } >"$1/passthrough.toml"
}
bench_start_wsnorm() { # pid-variable config port admin-port log
  taskset -c 0 "$wsnorm_bin" --config "$2" --listen "127.0.0.1:$3" --admin "127.0.0.1:$4" \
    --backend "127.0.0.1:$targets_echo_port" --log-format json 2>>"$5" &
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
  taskset -c 0 "$haproxy_bin" -db -f "$d/haproxy.cfg" 2>>"$d/haproxy.log" &
  haproxy_pid=$!; pids+=("$haproxy_pid")
  wait_port "$haproxy_port"
  bench_start_wsnorm wsnorm_pid "$d/wsnorm.toml" "$wsnorm_port" "$wsnorm_admin_port" "$d/wsnorm.log"
  bench_start_wsnorm pass_pid "$d/passthrough.toml" "$pass_port" "$pass_admin_port" "$d/passthrough.log"
  taskset -c 0 "$load_bin" relay --bind "127.0.0.1:$relay_port" \
    --backend "127.0.0.1:$targets_echo_port" 2>>"$d/relay.log" &
  relay_pid=$!; pids+=("$relay_pid")
  wait_port "$relay_port"
}
bench_targets_stop() {
  stop_procs "$nginx_pid" "$haproxy_pid" "$wsnorm_pid" "$pass_pid" "$relay_pid" || true
}
# Only wsnorm is offered agent_chat (the echo backend selects none) and only wsnorm with rules
# rewrites; the others echo as sent. bench_target_args TARGET [PID_OPTION]: TARGET's processes
# are passed with PID_OPTION (default --cpu-pid; idle's is --measure-pid).
bench_target_args() {
  local port sp=--subprotocol= check="" p
  case "$1" in
    nginx) port=$nginx_port ;;
    haproxy) port=$haproxy_port ;;
    wsnorm) port=$wsnorm_port; sp=--subprotocol=agent_chat; check=" --expect-rewrite" ;;
    passthrough) port=$pass_port; sp=--subprotocol=agent_chat ;;
    tcp_relay) port=$relay_port ;;
    *) die "unknown target $1" ;;
  esac
  printf '%s' "--url ws://127.0.0.1:$port/ws $sp$check"
  for p in $(bench_target_pids "$1"); do printf ' %s %s' "${2:---cpu-pid}" "$p"; done
  echo
}
bench_target_pids() {
  case "$1" in
    nginx) echo "$nginx_pid $nginx_worker" ;;
    haproxy) echo "$haproxy_pid" ;;
    wsnorm) echo "$wsnorm_pid" ;;
    passthrough) echo "$pass_pid" ;;
    tcp_relay) echo "$relay_pid" ;;
  esac
}
