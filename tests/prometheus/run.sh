#!/usr/bin/env bash
# Prometheus integration test for dashboards/wsnorm.json and dashboards/alerts.yml.
#
# Runs a real wsnorm (target/release/wsnorm, built beforehand) in front of its demo backend,
# scrapes it with a real Prometheus (Debian's package, installed here when missing) that loads
# alerts.yml, drives traffic through wsnorm (including a backend 1011 close), then evaluates every
# dashboard and alert expression through Prometheus's HTTP API and checks the key series have data.
#
# Everything listens on free loopback ports; every process started here is stopped on exit.
# Usage: tests/prometheus/run.sh        (WSNORM_BIN=/path/to/wsnorm to test another binary)
# WSNORM_RENDER=1 then kills the backend under an open WebSocket (1011s, backend down) and draws
# the dashboard from this Prometheus to target/dashboard/wsnorm.png (render.py, matplotlib in a
# pinned venv under target/), checking that every panel shows data and the 1011 spike is there.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WSNORM=${WSNORM_BIN:-$ROOT/target/release/wsnorm}
# The demo backend and client (the testkit crate), from the same build as the tests.
DEMO=$ROOT/target/release/wsnorm-demo
# The load tool, for compressed traffic (its echo backend compresses, as the backend's stack does).
LOAD=$ROOT/target/release/wsnorm-load
DASHBOARD=$ROOT/dashboards/wsnorm.json
ALERTS=$ROOT/dashboards/alerts.yml
HELPER=$ROOT/tests/prometheus/helper.py
PYTHON=${PYTHON:-python3}

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wsnorm-prometheus.XXXXXX")
RESULTS=$TMP/results
: >"$RESULTS"
PIDS=()
POLICY_RC_ADDED=""
STARTED=$SECONDS

cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $POLICY_RC_ADDED ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    if [[ $rc -ne 0 && -d $TMP ]]; then
        for log in "$TMP"/*.log; do
            [[ -s $log ]] || continue
            echo "---- last lines of $(basename "$log") ----" >&2
            tail -n 15 "$log" >&2
        done
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*"; }
ok() { echo "ok: $*" | tee -a "$RESULTS"; }
fail() { echo "FAIL: $*" | tee -a "$RESULTS"; }
# Runs the helper; its ok:/FAIL: lines go to the results as well.
helper() {
    local rc=0
    "$PYTHON" "$HELPER" "$@" | tee -a "$RESULTS" || rc=$?
    return "$rc"
}

summary_and_exit() {
    local passed failed
    passed=$(grep -c '^ok: ' "$RESULTS" || true)
    failed=$(grep -c '^FAIL: ' "$RESULTS" || true)
    echo "prometheus test took $((SECONDS - STARTED))s"
    echo "$passed passed, $failed failed"
    if [[ $failed -eq 0 ]]; then exit 0; else exit 1; fi
}

# A fatal failure: record it and stop (the summary still prints).
die() {
    fail "$*"
    summary_and_exit
}

# ------------------------------------------------------------------------------------------------
# Prometheus and promtool
# ------------------------------------------------------------------------------------------------
install_prometheus() {
    log "installing Debian's prometheus package"
    if [[ $(id -u) -ne 0 ]]; then
        die "prometheus/promtool missing and not root: apt-get install prometheus first"
    fi
    # The package's maintainer scripts would start its own service on :9090. Forbid that for
    # the install (invoke-rc.d honours policy-rc.d); we run our own Prometheus as a child.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_ADDED=1
    fi
    apt-get update -qq
    # No recommends: they would add prometheus-node-exporter, another service (:9100).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
        >"$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log" >&2; die "apt-get install prometheus failed"; }
    if [[ -n $POLICY_RC_ADDED ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_RC_ADDED=""
    fi
    # Where a service manager started it regardless, stop and disable the packaged service.
    if [[ -d /run/systemd/system ]]; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    elif service prometheus status >/dev/null 2>&1; then
        service prometheus stop >/dev/null 2>&1 || true
    fi
}

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    install_prometheus
fi
command -v prometheus >/dev/null && command -v promtool >/dev/null \
    || die "prometheus and promtool not found after the install"
log "$(prometheus --version 2>&1 | head -n 1)"

[[ -x $WSNORM ]] || die "$WSNORM not found: run cargo build --release first"
[[ -x $DEMO ]] || die "$DEMO not found: run cargo build --release first"
[[ -x $LOAD ]] || die "$LOAD not found: run cargo build --release first"

# ------------------------------------------------------------------------------------------------
# Static checks
# ------------------------------------------------------------------------------------------------
log "promtool check rules"
if promtool check rules "$ALERTS" >"$TMP/promtool-rules.log" 2>&1; then
    ok "promtool check rules dashboards/alerts.yml ($(grep -o 'SUCCESS: [0-9]* rules found' "$TMP/promtool-rules.log" || echo SUCCESS))"
else
    cat "$TMP/promtool-rules.log"
    fail "promtool check rules dashboards/alerts.yml"
fi
if "$PYTHON" -c 'import json,sys; json.load(open(sys.argv[1]))' "$DASHBOARD" 2>"$TMP/json.log"; then
    ok "dashboards/wsnorm.json is valid JSON"
else
    cat "$TMP/json.log"
    die "dashboards/wsnorm.json is not valid JSON"
fi

# ------------------------------------------------------------------------------------------------
# wsnorm, its demo backend, Prometheus
# ------------------------------------------------------------------------------------------------
read -r BACKEND_PORT PROXY_PORT ADMIN_PORT PROM_PORT ECHO_PORT PROXY2_PORT ADMIN2_PORT \
    < <("$PYTHON" "$HELPER" ports 7)
PROXY=127.0.0.1:$PROXY_PORT
ADMIN=127.0.0.1:$ADMIN_PORT
PROM=http://127.0.0.1:$PROM_PORT
log "ports: backend $BACKEND_PORT, wsnorm $PROXY_PORT (admin $ADMIN_PORT), prometheus $PROM_PORT"

RUN_START=$(date +%s)
"$DEMO" backend --bind "127.0.0.1:$BACKEND_PORT" --quiet >"$TMP/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")

cp "$ROOT/config/wsnorm.toml" "$TMP/wsnorm.toml"
"$WSNORM" --config "$TMP/wsnorm.toml" --listen "$PROXY" --admin "$ADMIN" \
    --backend "127.0.0.1:$BACKEND_PORT" --log-format json >"$TMP/wsnorm.log" 2>&1 &
WSNORM_PID=$!
PIDS+=("$WSNORM_PID")

if "$PYTHON" "$HELPER" wait-http "http://$ADMIN/readyz" 30; then
    ok "wsnorm ready (/readyz 200, backend reachable)"
else
    die "wsnorm did not become ready"
fi

# A second wsnorm (its own job, so the checks on job="wsnorm" see only the first) in front of a
# backend that compresses: both legs negotiate permessage-deflate and the backend's messages pass
# to the client compressed (wsnorm_passthrough_bytes_total).
"$LOAD" echo --deflate --bind "127.0.0.1:$ECHO_PORT" >"$TMP/deflate-echo.log" 2>&1 &
PIDS+=($!)
"$WSNORM" --config "$TMP/wsnorm.toml" --listen "127.0.0.1:$PROXY2_PORT" \
    --admin "127.0.0.1:$ADMIN2_PORT" --backend "127.0.0.1:$ECHO_PORT" --log-format json \
    >"$TMP/wsnorm-deflate.log" 2>&1 &
PIDS+=($!)
"$PYTHON" "$HELPER" wait-http "http://127.0.0.1:$ADMIN2_PORT/readyz" 30 \
    || die "the second wsnorm (compressing backend) did not become ready"
compressed_traffic() { # ROUND
    if timeout 60 "$LOAD" pingpong --deflate --url "ws://127.0.0.1:$PROXY2_PORT/ws" \
        --expect-rewrite -n 2 -m 20 --warmup 0 >"$TMP/deflate-$1.json" 2>"$TMP/deflate-$1.log" \
        && "$PYTHON" -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(r["errors"] or r["mismatches"] or r["round_trips"] != 40)' "$TMP/deflate-$1.json"; then
        ok "$1: 40 compressed round trips through the second wsnorm, every echo rewritten exactly"
    else
        cat "$TMP/deflate-$1.log" "$TMP/deflate-$1.json" 2>/dev/null
        fail "$1: compressed round trips through the second wsnorm"
    fi
}

cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - $ALERTS
scrape_configs:
  - job_name: wsnorm
    static_configs:
      - targets: ["$ADMIN"]
  - job_name: wsnorm-deflate
    static_configs:
      - targets: ["127.0.0.1:$ADMIN2_PORT"]
  # The job name deploy/kubernetes's annotation-based scrape produces: the alerts must not
  # depend on a job called wsnorm.
  - job_name: kubernetes-pods
    static_configs:
      - targets: ["$ADMIN"]
EOF
if promtool check config "$TMP/prometheus.yml" >"$TMP/promtool-config.log" 2>&1; then
    ok "promtool check config (scrape config with rule_files: alerts.yml)"
else
    cat "$TMP/promtool-config.log"
    fail "promtool check config"
fi

prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/tsdb" \
    --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn >"$TMP/prometheus.log" 2>&1 &
PIDS+=($!)

"$PYTHON" "$HELPER" wait-http "$PROM/-/ready" 30 || die "prometheus did not become ready"
# A baseline scrape before any traffic, so rate() sees the counters rise.
if "$PYTHON" "$HELPER" wait-prom "$PROM" 30 'up{job="wsnorm"}'; then
    ok "prometheus scrapes wsnorm (up{job=\"wsnorm\"} == 1)"
else
    die "prometheus never scraped wsnorm successfully"
fi

# ------------------------------------------------------------------------------------------------
# Traffic
# ------------------------------------------------------------------------------------------------
# Two rounds: some series (timestamp formats, HTTP status classes, subprotocols) only appear at
# their first increment, and rate() cannot see the increment that created a series. Round 1
# creates them, Prometheus scrapes, round 2 makes every rate on the dashboard non-zero.
demo_clients() { # ROUND COUNT
    local ok_runs=0 i
    for ((i = 1; i <= $2; i++)); do
        if timeout 30 "$DEMO" client --url "ws://$PROXY/ws" >"$TMP/demo-client-$1-$i.log" 2>&1 \
            && grep -q 'type rewritten' "$TMP/demo-client-$1-$i.log" \
            && grep -q 'timestamp rewritten' "$TMP/demo-client-$1-$i.log"; then
            ok_runs=$((ok_runs + 1))
        else
            cat "$TMP/demo-client-$1-$i.log"
        fi
    done
    if [[ $ok_runs -eq $2 ]]; then
        ok "$1: wsnorm-demo client x$2: incident message rewritten, agent started"
    else
        fail "$1: wsnorm-demo client: $ok_runs of $2 runs succeeded"
    fi
}

log "traffic round 1: wsnorm-demo client, raw WebSocket/HTTP client (1011 close, invalid timestamp, failed handshakes)"
demo_clients round1 3
helper traffic "$PROXY" round1 || true
compressed_traffic round1

log "traffic: config reloads (SIGHUP, a broken file, the file restored)"
kill -HUP "$WSNORM_PID"
cp "$TMP/wsnorm.toml" "$TMP/wsnorm.toml.good"
sleep 1.2
printf '\n[server]\nno_such_key = 1\n' >>"$TMP/wsnorm.toml"
sleep 2.5
cp "$TMP/wsnorm.toml.good" "$TMP/wsnorm.toml"
touch "$TMP/wsnorm.toml"

if "$PYTHON" "$HELPER" wait-prom "$PROM" 30 \
    'wsnorm_timestamp_inputs_total{job="wsnorm",format="invalid"}' \
    'wsnorm_http_requests_total{job="wsnorm",status_class="4xx"}' \
    'wsnorm_subprotocols_total{job="wsnorm",protocol="agent_chat"}' \
    'wsnorm_config_reloads_total{job="wsnorm",result="error"}' \
    'wsnorm_passthrough_bytes_total{job="wsnorm-deflate",direction="backend_to_client"}'; then
    ok "prometheus scraped round 1"
else
    fail "prometheus did not see round 1 in time"
fi

log "traffic round 2 (and one WebSocket held open for the active-connections gauge)"
"$PYTHON" "$HELPER" hold "$PROXY" 90 >"$TMP/hold.log" 2>&1 &
PIDS+=($!)
demo_clients round2 3
helper traffic "$PROXY" round2 || true
compressed_traffic round2

log "waiting for Prometheus to scrape the results"
if "$PYTHON" "$HELPER" wait-prom "$PROM" 30 \
    'wsnorm_connections_active{job="wsnorm"}' \
    'wsnorm_closes_total{job="wsnorm",code="1011"} >= 2' \
    'wsnorm_conversion_duration_seconds_count{job="wsnorm"}' \
    'wsnorm_config_reloads_total{job="wsnorm",result="ok"}' \
    'rate(wsnorm_passthrough_bytes_total{job="wsnorm-deflate",direction="backend_to_client"}[1m]) > 0'; then
    ok "prometheus scraped round 2"
else
    fail "prometheus did not see round 2 in time"
fi
# A few more scrapes and rule evaluations past the last change.
sleep 3

# Naming, units and help of every family, as exposed after traffic created the labelled series.
log "promtool check metrics (the live /metrics)"
if "$PYTHON" -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]).read().decode())' \
    "http://$ADMIN/metrics" >"$TMP/metrics.txt" \
    && promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool-metrics.log" 2>&1 \
    && [[ ! -s $TMP/promtool-metrics.log ]]; then
    ok "promtool check metrics: $(grep -c '^# TYPE' "$TMP/metrics.txt") families, no findings"
else
    cat "$TMP/promtool-metrics.log"
    fail "promtool check metrics on the live /metrics"
fi

# ------------------------------------------------------------------------------------------------
# Every dashboard and alert expression, against the live data
# ------------------------------------------------------------------------------------------------
log "evaluating dashboard and alert expressions"
helper check "$PROM" "$DASHBOARD" "$ALERTS" || true

# ------------------------------------------------------------------------------------------------
# The dashboard drawn, after a backend kill (WSNORM_RENDER=1)
# ------------------------------------------------------------------------------------------------
MATPLOTLIB_VERSION=3.10.9
if [[ ${WSNORM_RENDER:-} == 1 ]]; then
    VENV=$ROOT/target/render-venv
    if ! "$VENV/bin/python" -c "import matplotlib; assert matplotlib.__version__ == '$MATPLOTLIB_VERSION'" 2>/dev/null; then
        log "installing matplotlib $MATPLOTLIB_VERSION in $VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install -q "matplotlib==$MATPLOTLIB_VERSION" || die "pip install matplotlib failed"
    fi
    log "killing the backend under the open WebSocket (1011 to the client, backend down)"
    kill "$BACKEND_PID"
    if "$PYTHON" "$HELPER" wait-prom "$PROM" 30 \
        'wsnorm_closes_total{job="wsnorm",code="1011",initiator="proxy"}' \
        'wsnorm_backend_up{job="wsnorm"} == bool 0'; then
        ok "prometheus saw the backend kill (1011 by the proxy, wsnorm_backend_up 0)"
    else
        fail "prometheus did not see the backend kill in time"
    fi
    sleep 3
    mkdir -p "$ROOT/target/dashboard"
    "$VENV/bin/python" "$ROOT/tests/prometheus/render.py" "$PROM" "$DASHBOARD" \
        "$ROOT/target/dashboard/wsnorm.png" "$RUN_START" "$(date +%s)" | tee -a "$RESULTS" || true
fi

summary_and_exit
