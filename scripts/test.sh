#!/usr/bin/env bash
# The project's test command: set-up, then every test (unit, integration with real sockets).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The testkit's binaries (the demo backend some tests run as a process) are not built by
# `cargo test` itself: the testkit has no integration tests of its own.
cargo build --release --workspace --bins
cargo test --release --workspace --all-targets "$@"
