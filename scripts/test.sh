#!/bin/bash
# The whole test suite, from a fresh machine: installs what it needs (QEMU,
# the test guest's tools), builds the test guest, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
tests/guest/build.sh target/test-guest
cargo test --workspace --locked "$@"
