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
# rules ("no_rules": frames are still parsed, checked and re-framed, messages not parsed) and
# a plain tokio TCP relay (`wsnorm-load relay`: what a proxy on tokio costs before it looks at a
# frame). bench_targets_configure DIR PORT_BASE ECHO_PORT FDS writes their configs under DIR
# and takes the ports PORT_BASE+2..+8; then bench_targets_start (sets nginx_pid, nginx_worker,
# haproxy_pid, wsnorm_pid, no_rules_pid, relay_pid), bench_targets_stop, bench_target_args TARGET:
# the load tool's options for TARGET (its URL, subprotocol, check and CPU pids), and
# bench_target_pids TARGET: its processes (nginx: master and worker).
bench_targets_configure() {
  targets_dir=$1; targets_echo_port=$3
  nginx_port=$(($2 + 2)); wsnorm_port=$(($2 + 3)); wsnorm_admin_port=$(($2 + 4))
  no_rules_port=$(($2 + 5)); no_rules_admin_port=$(($2 + 6)); relay_port=$(($2 + 7))
  haproxy_port=$(($2 + 8))
  ports_free $nginx_port $wsnorm_port $wsnorm_admin_port $no_rules_port $no_rules_admin_port $relay_port \
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
  } >"$1/no_rules.toml"
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
  bench_start_wsnorm no_rules_pid "$d/no_rules.toml" "$no_rules_port" "$no_rules_admin_port" "$d/no_rules.log"
  taskset -c 0 "$load_bin" relay --bind "127.0.0.1:$relay_port" \
    --backend "127.0.0.1:$targets_echo_port" 2>>"$d/relay.log" &
  relay_pid=$!; pids+=("$relay_pid")
  wait_port "$relay_port"
}
bench_targets_stop() {
  stop_procs "$nginx_pid" "$haproxy_pid" "$wsnorm_pid" "$no_rules_pid" "$relay_pid" || true
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
    no_rules) port=$no_rules_port; sp=--subprotocol=agent_chat ;;
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
    no_rules) echo "$no_rules_pid" ;;
    tcp_relay) echo "$relay_pid" ;;
  esac
}

# Raises the descriptor limit (ulimit -n) for MOST proxied connections, or fails when the hard
# limit cannot allow them: each takes two descriptors in the proxy (9,000 need 18,000), and the
# load tool and the echo backend hold one per connection under the same limit.
# bench_fd_limit MOST sets want_fds (what the proxies are configured for).
bench_fd_limit() {
  local need_fds=$((2 * $1 + 100)) hard
  want_fds=$((need_fds + 900))
  [ "$want_fds" -ge 10240 ] || want_fds=10240
  hard=$(ulimit -Hn)
  if [ "$hard" != unlimited ]; then
    [ "$hard" -ge "$need_fds" ] || die "ulimit -Hn is $hard: $1 connections need $need_fds \
file descriptors in the proxy, so at most $(((hard - 100) / 2)) connections here"
    [ "$want_fds" -le "$hard" ] || want_fds=$hard
  fi
  ulimit -n "$want_fds"
}

# One ping-pong run of the load tool on CPU 1 ($conns connections, 50 warm-up round trips
# each), its report checked (every echo right):
# bench_pingpong "LOAD_OPTIONS" K ROUND_TRIPS LABEL OUTFILE
bench_pingpong() {
  # shellcheck disable=SC2086
  timeout 150 taskset -c 1 "$load_bin" pingpong $1 --clk-tck "$clk_tck" \
    -n "$conns" -k "$2" -m "$3" --warmup 50 --max-secs 120 --label "$4" >"$5" \
    || die "load run $4 failed (exit $?)"
  check_report "$5" "$4"
}
# A ping-pong report in one line.
bench_fmt_run='"\(.label): \(.msg_per_s|floor) msg/s p50 \(.p50_us) us p99 \(.p99_us) us cpu/msg \(.proxy_cpu_us_per_msg // 0 | .*100|round/100) us"'

# Idle memory: `wsnorm-load idle` on CPU 1 opens N connections, touches each (one round trip)
# and, with BURST > 0, sends a burst on each (64 KiB messages); it reads the measured processes'
# VmRSS before opening and once each stage has settled. Writes $scratch/idle-NAME-N.json (RSS
# at each stage, and per connection) and fails unless every connection passed every stage and
# was still open at the last reading.
# bench_idle NAME N BURST LOAD_OPTIONS... (the target's URL and --measure-pid options, and e.g.
# --quiet-secs, --touch-quiet-secs, --deflate)
bench_idle() {
  local t=$1 n=$2 burst=$3 f="$scratch/idle-$1-$2.jsonl" stages=3
  shift 3
  [ "$burst" -gt 0 ] && stages=4
  sleep 1
  timeout $((stages * 150 + 30)) taskset -c 1 "$load_bin" idle "$@" -n "$n" --touch \
    --burst "$burst" --burst-bytes 65536 --settle-secs 2 --stage-timeout-secs 120 \
    --hold-secs 0 >"$f" 2>"$scratch/idle-$t-$n.err" || die "idle $t x$n failed (exit $?)"
  jq -s --arg t "$t" --argjson n "$n" '
    def at($e): map(select(.event == $e))[0];
    def per($e): if at($e) == null then null else (at($e).rss_kib - at("start").rss_kib) / $n end;
    { target: $t, connections: $n, connections_ok: at("open").connections_ok,
      open_at_last: (map(select(.event == "open" or .event == "touched" or .event == "burst"))
        | last | .connections_open),
      touched_ok: at("touched").connections_ok, burst_ok: (at("burst").connections_ok // null),
      first_error: ([.[] | .first_error // empty][0] // null),
      burst_messages: (at("burst").messages // 0), burst_bytes: (at("burst").message_bytes // null),
      rss_before_kib: at("start").rss_kib, rss_open_kib: at("open").rss_kib,
      rss_touched_kib: at("touched").rss_kib, rss_burst_kib: (at("burst").rss_kib // null),
      hwm_burst_kib: (at("burst").hwm_kib // null),
      kib_per_conn_open: per("open"), kib_per_conn_touched: per("touched"),
      kib_per_conn_burst: per("burst") }' "$f" >"$scratch/idle-$t-$n.json"
  jq -e --argjson n "$n" --argjson burst "$burst" '.connections_ok == $n and .touched_ok == $n
      and ($burst == 0 or .burst_ok == $n) and .open_at_last == $n' "$scratch/idle-$t-$n.json" >/dev/null \
    || die "idle $t x$n: $(jq -r '"\(.connections_ok) opened, \(.touched_ok) touched, \(.burst_ok) burst, \(.open_at_last) still open at the last reading: \(.first_error)"' "$scratch/idle-$t-$n.json") (KEEP_TMP=1 keeps the proxies' logs)"
  # Let the proxy see the closes before the next measurement.
  sleep 3
  log "$(jq -r 'def f: . * 100 | round / 100; "idle \(.target) x\(.connections): RSS \(.rss_before_kib) -> \(.rss_open_kib) -> \(.rss_touched_kib) -> \(.rss_burst_kib // "-") KiB: \(.kib_per_conn_open | f) KiB/conn open, \(.kib_per_conn_touched | f) after one message, \(.kib_per_conn_burst // "-" | if type == "number" then f else . end) after a burst and quiet"' "$scratch/idle-$t-$n.json")"
}

# What every result file starts with (JSON): the date, the machine, the proxies' versions and
# the wsnorm binary. After bench_targets_configure.
bench_header() {
  jq -n --arg date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --arg kernel "$(uname -r)" \
    --arg cpu "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
    --argjson nproc "$(nproc)" --arg nginx "$("$nginx_bin" -v 2>&1 | sed 's/.*nginx\///')" \
    --arg haproxy "$("$haproxy_bin" -v | awk 'NR == 1 {print $3}')" --arg wsnorm_bin "$wsnorm_bin" \
    '{ date: $date, machine: { nproc: $nproc, cpu: $cpu, kernel: $kernel },
       nginx_version: $nginx, haproxy_version: $haproxy, wsnorm_bin: $wsnorm_bin }'
}

# TARGETS in round R's order: as given in odd rounds, reversed in even ones. This VM's speed
# drifts over seconds, and a fixed order with another load in between charged the drift to one
# side. bench_order R TARGET...
bench_order() {
  local r=$1 i out=()
  shift
  if [ $((r % 2)) = 1 ]; then
    out=("$@")
  else
    for ((i = $#; i >= 1; i--)); do out+=("${!i}"); done
  fi
  echo "${out[@]}"
}

# Round R of ping-pong: at K=1 ($m1 round trips per connection) then K=16 ($m16), FIRST (a
# target or "") and then each TARGET in round R's order, each run by the script's own
# `pingpong TARGET K ROUND_TRIPS LABEL OUTFILE` into $scratch/pp-TARGET-kK-rR.json and logged.
# bench_pingpong_round R FIRST TARGET...
bench_pingpong_round() {
  local r=$1 first=$2 k t m f
  shift 2
  for k in 1 16; do
    m=$m1; [ "$k" = 16 ] && m=$m16
    for t in $first $(bench_order "$r" "$@"); do
      f="$scratch/pp-$t-k$k-r$r.json"
      pingpong "$t" "$k" "$m" "$t k=$k round $r" "$f"
      log "$(jq -r "$bench_fmt_run" "$f")"
    done
  done
}

# What the comparisons need: nginx, HAProxy, jq and taskset (and any more CMD:PKG given),
# installed when missing, and 2 CPUs. bench_prerequisites [CMD:PKG...]
bench_prerequisites() {
  install_missing nginx:nginx haproxy:haproxy jq:jq taskset:util-linux "$@"
  [ "$(nproc)" -ge 2 ] || die "needs 2 CPUs (proxy on CPU 0, load on CPU 1)"
}

# permessage-deflate offered with every message compressed on its own both ways: what wsnorm's
# defaults negotiate whatever a client offers (one word: the load tool's options are split on
# spaces).
per_message_offer="permessage-deflate;client_no_context_takeover;server_no_context_takeover;client_max_window_bits"

# Round trips per connection in each ping-pong run at K=1 and K=16 (sets m1 and m16): with
# QUICK = 1, 300 and 600, and one round (rounds=1); else M1 and M16, default 2,000 and 5,000.
# bench_round_trips QUICK
bench_round_trips() {
  if [ "$1" = 1 ]; then
    rounds=1; m1=300; m16=600
  else
    m1=${M1:-2000}; m16=${M16:-5000}
  fi
}
