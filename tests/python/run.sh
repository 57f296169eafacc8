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
source tests/python/venv.sh
WSNORM=${WSNORM_BIN:-$PWD/target/release/wsnorm}
[ -x "$WSNORM" ] || { echo "python: $WSNORM missing: run scripts/test.sh first" >&2; exit 2; }
websockets_venv
install_missing chromium:chromium
"$VENV/bin/python" tests/python/deflate_chat.py "$WSNORM"
"$VENV/bin/python" tests/python/browser_chat.py "$WSNORM" "$(command -v chromium)"
