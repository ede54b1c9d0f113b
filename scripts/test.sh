#!/bin/bash
# The whole test suite, from a fresh machine: installs what it needs (QEMU,
# the test guest's tools, Chromium and playwright-core for the console, a
# Garage S3 server, PostgreSQL, Python tools in a virtualenv), builds the
# test guest, starts Garage and a private PostgreSQL on loopback, runs every
# test against them and the embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/s3.sh install
scripts/console-deps.sh
scripts/python-deps.sh
tests/guest/build.sh target/test-guest
scripts/s3.sh start target/s3
# A region's store: three Garage nodes, one per zone, replication 3.
REPRISE_S3_PORT=3920 REPRISE_S3_NODES=3 REPRISE_S3_ENV=REPRISE_TEST_CLUSTER \
  scripts/s3.sh start target/s3-cluster
scripts/postgres.sh start target/pg
trap 'scripts/s3.sh stop target/s3; scripts/s3.sh stop target/s3-cluster; scripts/postgres.sh stop target/pg' EXIT
# shellcheck source=/dev/null
source target/s3/env
# shellcheck source=/dev/null
source target/s3-cluster/env
# shellcheck source=/dev/null
source target/pg/env
cargo test --workspace --locked "$@"
# The API and CLI tests again, each daemon a host of a region: its catalog
# in PostgreSQL, its snapshots in the three-node Garage cluster.
REPRISE_TEST_CATALOG=region cargo test -p reprise --locked --test api --test cli "$@"
# A short coverage-guided fuzzing run of every target (fuzz/).
scripts/fuzz.sh
