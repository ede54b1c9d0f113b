#!/bin/bash
# The whole fault campaign, from one command (crates/reprise/tests/faults.rs,
# powercut.rs and the damaged-input tests; docs/RELIABILITY.md has its
# figures):
#   - the daemon killed at random moments of random operations on a running
#     guest, ROUNDS times (default 100; 1000 take about 40 minutes on 2
#     cores), each start checked against the disks;
#   - 200 backups with restores through an S3 that refuses, cuts or slows
#     5 % of requests each;
#   - 200 backups raced by collections and deletes at seeded instants;
#   - the power of a VM running the daemon cut 100 times (needs root: the
#     VM's disk is loop-mounted; about 25 minutes);
#   - 500 freezes, each with a fault of the guest agent drawn at random;
#   - 50,000 damaged copies of each stored format, qcow2 image, agent reply
#     and QMP reply.
# CI runs short versions of each as part of scripts/test.sh.
#
#   scripts/faults.sh [ROUNDS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-100}
scripts/install-deps.sh
scripts/s3.sh install
tests/guest/build.sh target/test-guest
scripts/s3.sh start target/s3
scripts/postgres.sh start target/pg
trap 'scripts/s3.sh stop target/s3; scripts/postgres.sh stop target/pg' EXIT
# shellcheck source=/dev/null
source target/s3/env
# shellcheck source=/dev/null
source target/pg/env
cargo build --locked -p reprise --example seamed_serve
export REPRISE_FAULT_ROUNDS=$rounds
export REPRISE_S3_FAULT_ROUNDS=${REPRISE_S3_FAULT_ROUNDS:-200}
export REPRISE_GC_RACE_ROUNDS=${REPRISE_GC_RACE_ROUNDS:-200}
export REPRISE_POWERCUT_ROUNDS=${REPRISE_POWERCUT_ROUNDS:-100}
export REPRISE_FREEZE_TRIALS=${REPRISE_FREEZE_TRIALS:-500}
export REPRISE_MUTATIONS=${REPRISE_MUTATIONS:-50000}
if [ -n "${2:-}" ]; then
  export REPRISE_FAULT_SEED=$2 REPRISE_POWERCUT_SEED=$2
fi
figures="round|campaign|unreliable S3|collections racing|freezes|damaged|mutat|cases|VIOLATION|test result|panicked|called .Result|assertion"
# grep --line-buffered: the figures as they come, not at the end.
cargo test --locked -p reprise --test faults --test powercut -- --nocapture 2>&1 | grep --line-buffered -E "$figures"
cargo test --locked -p reprise-daemon --test quiesce freezes_with_random_faults -- --nocapture 2>&1 | grep -E "$figures"
cargo test --locked -p reprise-chunks -p reprise-qcow2 --test mutations -- --nocapture 2>&1 | grep -E "$figures"
cargo test --locked -p reprise-qemu --test replies -- --nocapture 2>&1 | grep -E "$figures"
