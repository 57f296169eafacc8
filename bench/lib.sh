# Shared by the bench scripts (sourced, from the repository root): the helpers of
# scripts/lib.sh (messages, installing what is missing, the processes a script started, all
# killed on exit, a scratch directory, waiting for ports), plus nginx's config, the binaries
# measured and the proxies compared.
. scripts/lib.sh

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
  ports_free $nginx_port $wsnorm_port $wsnorm_admin_port $pass_port $pass_admin_port $relay_port
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
bench_targets_stop() { stop_procs "$nginx_pid" "$wsnorm_pid" "$pass_pid" "$relay_pid" || true; }
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
