#!/usr/bin/env bash
# Autobahn|TestSuite through wsnorm.
#
#   tests/autobahn/run.sh [--client-only | --server-only] [--cases '1.*,2.*'] [--no-build]
#
# fuzzingclient (wsnorm's client leg): wstest plays each case against
#   (a) examples/autobahn_echo alone (the baseline), and
#   (b) wsnorm in front of the same echo server (agent URL ws://127.0.0.1:P/ws): the client
#       leg compressed (permessage-deflate, which the echo server does not negotiate), and
#   (e) with permessage-deflate cases only, wsnorm in front of a python `websockets` echo server
#       (deflate_echo.py, venv in target/python-websockets): both legs compressed. By default every
#       parameter set with payloads of 16 B to 8 KiB (12.*.[1-6], 13.*.[1-6]: 72 cases): the
#       python echo server takes ~14 s per case of 1000 large messages, so all 216 would add
#       ~50 min; the 12.*/13.* patterns given with --cases run as given.
# fuzzingserver (wsnorm's backend leg): wstest is the backend, examples/autobahn_client echoes
#   each case's messages
#   (c) directly (the baseline), and
#   (d) through wsnorm (--backend pointed at the fuzzing server; /runCase, /getCaseCount and
#       /updateReports as routes; the fuzzing server told wsnorm's port, see wstest.py).
# All cases run, 12.* and 13.* (permessage-deflate) included: wsnorm negotiates it on each leg.
# A wsnorm run where a 12.*/13.* case came out UNIMPLEMENTED (compression not negotiated) fails.
#
# Prints the counts of each behaviour, every FAILED case with its description and what the
# suite saw, the differences from the baseline, and ends with `N passed, M failed` (the wsnorm
# cases). Exit status: 0 all wsnorm cases passed, 1 some FAILED, 2 setup problem (no Python 2.7,
# install failed, a process did not start).
#
# Needs: Python 2.7 (autobahntestsuite 25.10.1 runs on nothing newer; found via $AUTOBAHN_PYTHON,
# pyenv, or PATH), Python 3.9+ for the deflate echo server ($AUTOBAHN_PYTHON3, PATH, or pyenv),
# PyPI for the first installs (cached in target/autobahn-venv and target/python-websockets), cargo.
# Results: target/autobahn/<run>/index.json and index.html.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
HERE=$ROOT/tests/autobahn
# first_python and websockets_venv (which sets VENV, hence SUITE_VENV below).
source tests/python/venv.sh

MODE=both
CASES='*'
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --client-only) MODE=client ;;
        --server-only) MODE=server ;;
        --cases) CASES=$2; shift ;;
        --cases=*) CASES=${1#--cases=} ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

OUT=$ROOT/target/autobahn
SUITE_VENV=$ROOT/target/autobahn-venv
mkdir -p "$OUT"

die() { echo "autobahn: $*" >&2; exit 2; }

# --- Python 2.7 --------------------------------------------------------------------------------
find_python27() {
    first_python 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' \
        "${AUTOBAHN_PYTHON:-}" \
        "$( (pyenv root 2>/dev/null || echo "$HOME/.pyenv") )"/versions/2.7*/bin/python2.7 \
        "$(command -v python2.7 2>/dev/null || true)" \
        "$(command -v python2 2>/dev/null || true)"
}
PY=$(find_python27) || die "Python 2.7 not found.
  autobahntestsuite (wstest) runs only on Python 2.7. Looked at \$AUTOBAHN_PYTHON, pyenv's
  versions ($(pyenv root 2>/dev/null || echo ~/.pyenv)/versions/2.7*) and python2.7/python2 on PATH.
  Debian 12 packages no Python 2, and 'pyenv install 2.7.18' downloads the CPython source from
  python.org, which this network does not reach. Provide one of:
    - a Python 2.7 interpreter, then AUTOBAHN_PYTHON=/path/to/python2.7 $0
    - Python-2.7.18.tar.xz in \$(pyenv root)/cache/, then 'pyenv install 2.7.18'
      (needs build-essential libssl-dev zlib1g-dev libffi-dev libbz2-dev libreadline-dev libsqlite3-dev)"
echo "autobahn: Python 2.7 at $PY"

# --- the suite, installed once into target/autobahn-venv (SUITE_VENV) --------------------------
PINS=(txaio==2.1.0 incremental==16.10.1 pyOpenSSL==19.1.0 cryptography==3.3.2 Twisted==19.10.0
      zope.interface==4.6.0 jinja2==2.11.3 markupsafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0
      service_identity==18.1.0 unittest2==1.1.0 six==1.16.0 setuptools==44.0.0
      'autobahn[accelerate,twisted]==0.10.9' autobahntestsuite==25.10.1)
STAMP="$PY ${PINS[*]}"
if [ ! -f "$SUITE_VENV/.installed" ] || [ "$(cat "$SUITE_VENV/.installed")" != "$STAMP" ]; then
    echo "autobahn: installing autobahntestsuite into $SUITE_VENV (once)"
    rm -rf "$SUITE_VENV"
    mkdir -p "$SUITE_VENV"
    "$PY" -m pip --version >/dev/null 2>&1 || "$PY" -m ensurepip >/dev/null 2>&1 ||
        die "$PY has no pip and ensurepip failed"
    if ! "$PY" -m pip install --disable-pip-version-check --no-warn-script-location \
            --target "$SUITE_VENV/site" "${PINS[@]}" >"$SUITE_VENV/pip.log" 2>&1; then
        tail -30 "$SUITE_VENV/pip.log" >&2
        die "pip install failed (log: $SUITE_VENV/pip.log)"
    fi
    echo "$STAMP" >"$SUITE_VENV/.installed"
fi
wstest() {
    "$PY" "$HERE/wstest.py" "$SUITE_VENV/site" "$@"
}
wstest --autobahnversion 2>&1 | sed 's/^/autobahn: /' | head -3 || true

# --- python websockets, for the echo server that compresses (tests/python/venv.sh) ------------
PYTHON3=${AUTOBAHN_PYTHON3:-${PYTHON3:-}} websockets_venv
PY3=$VENV/bin/python
echo "autobahn: Python 3 at $PY3 (deflate echo server)"

# --- binaries -----------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    echo "autobahn: cargo build --release --bin wsnorm --example autobahn_echo --example autobahn_client"
    cargo build --release --bin wsnorm --example autobahn_echo --example autobahn_client ||
        die "build failed"
fi
WSNORM=$ROOT/target/release/wsnorm
ECHO=$ROOT/target/release/examples/autobahn_echo
CLIENT=$ROOT/target/release/examples/autobahn_client
for b in "$WSNORM" "$ECHO" "$CLIENT"; do
    [ -x "$b" ] || die "$b missing: run without --no-build"
done

# --- processes ------------------------------------------------------------------------------------
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

USED_PORTS=" "
# run_waiting PID: waits for a background job (a signal to this script then acts at once, where a
# foreground job would delay it until the job ended), and returns its status.
run_waiting() {
    PIDS+=("$1")
    local rc=0 pid keep=()
    wait "$1" || rc=$?
    # It has been reaped: forget it, so that cleanup never signals a reused pid.
    for pid in "${PIDS[@]}"; do
        [ "$pid" = "$1" ] || keep+=("$pid")
    done
    PIDS=("${keep[@]}")
    return "$rc"
}

free_port() { # free_port VAR: a free loopback port not handed out before in this run
    local p
    while :; do
        p=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        case "$USED_PORTS" in *" $p "*) continue ;; esac
        USED_PORTS="$USED_PORTS$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
}

# Waits until something accepts TCP connections on 127.0.0.1:$1 (or $2, the pid, dies).
wait_port() {
    local port=$1 pid=$2 name=$3 i
    for i in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || die "$name exited at startup (log: $OUT/$name.log)"
        if "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    die "$name did not listen on 127.0.0.1:$port within 20 s (log: $OUT/$name.log)"
}

start_deflate_echo() { # -> DEFLATE_ECHO_PORT
    free_port DEFLATE_ECHO_PORT
    "$PY3" "$HERE/deflate_echo.py" "$DEFLATE_ECHO_PORT" >"$OUT/deflate-echo.log" 2>&1 &
    PIDS+=($!)
    wait_port "$DEFLATE_ECHO_PORT" "$!" deflate-echo
}

start_echo() { # -> ECHO_PORT
    free_port ECHO_PORT
    "$ECHO" "127.0.0.1:$ECHO_PORT" >"$OUT/echo.log" 2>&1 &
    PIDS+=($!)
    wait_port "$ECHO_PORT" "$!" echo
}

# start_wsnorm NAME BACKEND_PORT CONFIG_FILE [PORT] -> WSNORM_PORT
start_wsnorm() {
    local name=$1 backend=$2 config=$3
    if [ -n "${4:-}" ]; then WSNORM_PORT=$4; else free_port WSNORM_PORT; fi
    free_port WSNORM_ADMIN
    "$WSNORM" --config "$config" --listen "127.0.0.1:$WSNORM_PORT" --admin "127.0.0.1:$WSNORM_ADMIN" \
        --backend "127.0.0.1:$backend" --log-format json >"$OUT/$name.log" 2>&1 &
    PIDS+=($!)
    wait_port "$WSNORM_PORT" "$!" "$name"
    local i
    for i in $(seq 1 100); do
        curl -fsS "http://127.0.0.1:$WSNORM_ADMIN/healthz" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "$name: /healthz did not answer (log: $OUT/$name.log)"
}

cases_json() {
    "$PY" -c 'import json, sys; print(json.dumps([c.strip() for c in sys.argv[1].split(",") if c.strip()]))' "$CASES"
}

# The cases of $CASES for the both-legs run (12.* and 13.* ones, see (e) above), or none.
deflate_cases() {
    "$PY" - "$CASES" <<'PYEOF'
import fnmatch, sys
wanted = [c.strip() for c in sys.argv[1].split(",") if c.strip()]
picked = [c for c in wanted if c.startswith(("12", "13")) or c == "*"]
out = []
for c in picked:
    out += ["12.*.[1-6]$", "13.*.[1-6]$"] if c == "*" else [c]
print(",".join(out))
PYEOF
}

# Same settings for both wsnorm runs: the default routes and rules, messages up to 64 MiB.
CLIENT_CONFIG=$OUT/wsnorm-client.toml
cat >"$CLIENT_CONFIG" <<'EOF'
# tests/autobahn/run.sh: wsnorm in front of the echo server (fuzzingclient).
[websocket]
max_message_bytes = 67108864
EOF
SERVER_CONFIG=$OUT/wsnorm-server.toml
cat >"$SERVER_CONFIG" <<'EOF'
# tests/autobahn/run.sh: wsnorm in front of wstest's fuzzing server (fuzzingserver).
[websocket]
max_message_bytes = 67108864

# The fuzzing server's endpoints; with AUTOBAHN_EXTERNAL_PORT it accepts only handshakes that
# name wsnorm's port, so the case count and report requests go through wsnorm too.
[[websocket.routes]]
path = "/runCase"

[[websocket.routes]]
path = "/getCaseCount"

[[websocket.routes]]
path = "/updateReports"
EOF

RUNS=()
START_ALL=$(date +%s)

# Keeps wsnorm's close and handshake counters of a run: $1 = file.
save_metrics() {
    curl -fsS "http://127.0.0.1:$WSNORM_ADMIN/metrics" 2>/dev/null |
        grep -E '^wsnorm_(closes_total|handshakes_total|messages_total)' >"$1" || true
}

# fuzzingclient: $1 = label, $2 = agent URL
fuzzingclient() {
    local label=$1 url=$2 dir=$OUT/$1 start
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/spec.json" <<EOF
{
  "outdir": "$dir",
  "servers": [{"agent": "$label", "url": "$url"}],
  "cases": $(cases_json),
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
    echo "autobahn: fuzzingclient -> $label at $url"
    start=$(date +%s)
    (cd "$dir" && exec "$PY" "$HERE/wstest.py" "$SUITE_VENV/site" -m fuzzingclient -s "$dir/spec.json") \
        >"$dir/wstest.log" 2>&1 &
    run_waiting $! || { tail -20 "$dir/wstest.log" >&2; die "wstest -m fuzzingclient failed for $label (log: $dir/wstest.log)"; }
    echo "autobahn: $label took $(( $(date +%s) - start )) s"
}

# fuzzingserver: $1 = label, $2 = "direct" or "wsnorm"
fuzzingserver() {
    local label=$1 via=$2 dir=$OUT/$1 port start pid case_url external=
    rm -rf "$dir"
    mkdir -p "$dir"
    free_port port
    if [ "$via" = wsnorm ]; then
        # wsnorm forwards the client's Host header (which names wsnorm's port): tell the
        # fuzzing server the port it is reached under (see wstest.py).
        free_port WSNORM_PORT
        external=$WSNORM_PORT
    fi
    cat >"$dir/spec.json" <<EOF
{
  "url": "ws://127.0.0.1:$port",
  "outdir": "$dir",
  "cases": $(cases_json),
  "exclude-cases": [],
  "exclude-agent-cases": {}
}
EOF
    (cd "$dir" && AUTOBAHN_EXTERNAL_PORT=$external exec "$PY" "$HERE/wstest.py" "$SUITE_VENV/site" \
        -m fuzzingserver -s "$dir/spec.json" -u 0) >"$dir/wstest.log" 2>&1 &
    pid=$!
    PIDS+=($pid)
    wait_port "$port" "$pid" "$label/wstest"
    case_url=ws://127.0.0.1:$port
    if [ "$via" = wsnorm ]; then
        start_wsnorm "$label-wsnorm" "$port" "$SERVER_CONFIG" "$WSNORM_PORT"
        case_url=ws://127.0.0.1:$WSNORM_PORT
    fi
    echo "autobahn: fuzzingserver <- $label (cases via $case_url)"
    start=$(date +%s)
    "$CLIENT" "$case_url" "$case_url" "$label" >"$dir/client.log" 2>&1 &
    run_waiting $! || { tail -20 "$dir/client.log" >&2; die "autobahn_client failed for $label (log: $dir/client.log)"; }
    echo "autobahn: $label took $(( $(date +%s) - start )) s"
    [ "$via" = wsnorm ] && save_metrics "$dir/wsnorm-metrics.txt"
    cleanup
}

if [ "$MODE" != server ]; then
    start_echo
    fuzzingclient echo "ws://127.0.0.1:$ECHO_PORT/ws"
    start_wsnorm wsnorm "$ECHO_PORT" "$CLIENT_CONFIG"
    fuzzingclient wsnorm "ws://127.0.0.1:$WSNORM_PORT/ws"
    save_metrics "$OUT/wsnorm/wsnorm-metrics.txt"
    cleanup
    RUNS+=("echo=$OUT/echo:echo" "wsnorm=$OUT/wsnorm:wsnorm:subject:echo")
    DEFLATE_CASES=$(deflate_cases)
    if [ -n "$DEFLATE_CASES" ]; then
        ALL_CASES=$CASES
        CASES=$DEFLATE_CASES
        start_deflate_echo
        start_wsnorm wsnorm-deflate "$DEFLATE_ECHO_PORT" "$CLIENT_CONFIG"
        fuzzingclient wsnorm-deflate "ws://127.0.0.1:$WSNORM_PORT/ws"
        save_metrics "$OUT/wsnorm-deflate/wsnorm-metrics.txt"
        cleanup
        CASES=$ALL_CASES
        RUNS+=("wsnorm-deflate=$OUT/wsnorm-deflate:wsnorm-deflate:subject")
    fi
fi
if [ "$MODE" != client ]; then
    fuzzingserver client-direct direct
    fuzzingserver client-wsnorm wsnorm
    RUNS+=("client-direct=$OUT/client-direct:client-direct"
           "client-wsnorm=$OUT/client-wsnorm:client-wsnorm:subject:client-direct")
fi
echo "autobahn: suite took $(( $(date +%s) - START_ALL )) s; reports in $OUT/*/index.html"
echo
PYTHONIOENCODING=utf-8 "$PY" "$HERE/report.py" "${RUNS[@]}"
