#!/bin/bash
# Run every benchmark of reprise on this machine and rewrite docs/BENCHMARKS.md
# with the figures and ratios measured in this run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
tests/guest/build.sh target/test-guest >/dev/null
cargo run --release --locked -p reprise-bench -- docs/BENCHMARKS.md
