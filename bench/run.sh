#!/bin/bash
# Run every benchmark of reprise on this machine and rewrite docs/BENCHMARKS.md
# with the figures and ratios measured in this run. REPRISE_BENCH=points (or
# =memory-points or =disk-points, one half of them), =snapshots, =deploy, =region or =recover runs one group
# and keeps the other sections. To try a change quickly: REPRISE_BENCH_RUNS=1
# REPRISE_BENCH_PEERS=0 (one run of reprise and the floor only) and a path to
# write to other than docs/BENCHMARKS.md as the argument of reprise-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
tests/guest/build.sh target/test-guest >/dev/null
# The peers of volume snapshots: restic and borg from Debian, rustic from
# crates.io (built once per machine).
if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q restic borgbackup
fi
RUSTIC_ROOT=$HOME/.cache/rustic
[ -x "$RUSTIC_ROOT/bin/rustic" ] || cargo install rustic-rs --locked --quiet --root "$RUSTIC_ROOT"
export PATH="$RUSTIC_ROOT/bin:$PATH"
# A region's catalog and store: PostgreSQL and a three-node Garage cluster.
REPRISE_PG_PORT=55452 scripts/postgres.sh start target/bench-pg
REPRISE_S3_PORT=3980 REPRISE_S3_NODES=3 REPRISE_S3_ENV=REPRISE_TEST_CLUSTER \
  scripts/s3.sh start target/bench-s3-cluster
trap 'scripts/s3.sh stop target/bench-s3-cluster; scripts/postgres.sh stop target/bench-pg' EXIT
# shellcheck source=/dev/null
source target/bench-pg/env
# shellcheck source=/dev/null
source target/bench-s3-cluster/env
# The snapshot benchmarks drive a real `reprise serve` process.
cargo build --release --locked -p reprise
cargo run --release --locked -p reprise-bench -- docs/BENCHMARKS.md
