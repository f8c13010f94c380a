#!/usr/bin/env bash
# Set up what the tests need (packages, the kernel, the test kernel tree) and run the whole test
# suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
cargo test --release --locked --workspace -- --test-threads=2
