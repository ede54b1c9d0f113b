#!/bin/bash
# Run every benchmark of reprise on this machine and rewrite docs/BENCHMARKS.md
# with the figures and ratios measured in this run. REPRISE_BENCH=points,
# =snapshots or =deploy runs one group and keeps the other sections.
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
cargo run --release --locked -p reprise-bench -- docs/BENCHMARKS.md
