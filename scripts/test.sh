#!/usr/bin/env bash
# The project's test command: set-up, then every test (unit, integration with real sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --release --workspace --all-targets "$@"
