#!/bin/bash
# The long fault campaign: the daemon killed at random moments of random
# operations on a running guest, ROUNDS times (default 100; 1000 take about
# 40 minutes on 2 cores), each start
# checked against the disks; and 200 backups with restores through an S3
# that refuses, cuts or slows 5 % of requests each; and 200 backups raced
# by collections and deletes at seeded instants (see
# crates/reprise/tests/faults.rs). CI runs short ones (6, 12 and 10 rounds) as
# part of scripts/test.sh.
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
[ -n "${2:-}" ] && export REPRISE_FAULT_SEED=$2
cargo test --locked -p reprise --test faults -- --nocapture 2>&1 | grep -E "round|fault campaign|unreliable S3|collections racing|VIOLATION|test result|panicked|called .Result|assertion"
