#!/usr/bin/env bash
# permessage-deflate end to end through wsnorm, with the backend's own stack (python
# `websockets`, compressing) behind it:
#   - deflate_chat.py: a python `websockets` client, also compressing;
#   - browser_chat.py: headless Chromium (Debian's `chromium`, installed here when missing: a
#     missing browser is installed, never skipped).
# The pinned venv is made once under target/python-websockets.
#
#   tests/python/run.sh        (WSNORM_BIN=/path/to/wsnorm to test another binary; default
#                               target/release/wsnorm, built by scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
WSNORM=${WSNORM_BIN:-$PWD/target/release/wsnorm}
VENV=$PWD/target/python-websockets
PINS=(websockets==15.0.1)
[ -x "$WSNORM" ] || { echo "python: $WSNORM missing: run scripts/test.sh first" >&2; exit 2; }
PY=""
for c in "${PYTHON3:-}" "$(command -v python3 2>/dev/null || true)" \
         "$( (pyenv root 2>/dev/null || echo "$HOME/.pyenv") )"/versions/3.1[1-3]*/bin/python3; do
    [ -n "$c" ] && [ -x "$c" ] || continue
    if "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
        PY=$c
        break
    fi
done
[ -n "$PY" ] || { echo "python: no Python 3.9+ with venv found" >&2; exit 2; }
if [ ! -f "$VENV/.installed" ] || [ "$(cat "$VENV/.installed")" != "$PY ${PINS[*]}" ]; then
    echo "python: installing ${PINS[*]} into $VENV (once)"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${PINS[@]}"
    echo "$PY ${PINS[*]}" >"$VENV/.installed"
fi
install_missing chromium:chromium
"$VENV/bin/python" tests/python/deflate_chat.py "$WSNORM"
"$VENV/bin/python" tests/python/browser_chat.py "$WSNORM" "$(command -v chromium)"
