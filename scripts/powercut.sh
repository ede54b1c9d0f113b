#!/bin/bash
# The long power-cut campaign: a daemon in a VM whose power is cut (kill -9
# of the VM's QEMU, the guest's page cache lost) at random moments of random
# operations, ROUNDS times (default 100, about 25 minutes on 2 cores); after
# each cut, what the daemon showed done is checked on the VM's disk and
# through its API (see crates/reprise/tests/powercut.rs). CI runs 3 rounds
# as part of scripts/test.sh. Needs root (the VM's disk is loop-mounted).
#
#   scripts/powercut.sh [ROUNDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
tests/guest/build.sh target/test-guest
export REPRISE_POWERCUT_ROUNDS=${1:-100}
[ -n "${2:-}" ] && export REPRISE_POWERCUT_SEED=$2
cargo test --locked -p reprise --test powercut -- --nocapture 2>&1 | grep -E "round|power-cut campaign|VIOLATION|test result|panicked|assertion"
