#!/bin/bash
# Run reprise on its embedded defaults (after installing QEMU if needed):
# data in /var/lib/reprise (root) or ~/.local/share/reprise, the API on
# 127.0.0.1:7480, a SQLite catalog, one zone, a local-directory region store.
# Extra arguments go to `reprise serve` (--data-dir, --listen, --config).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked -p reprise
exec target/release/reprise serve "$@"
