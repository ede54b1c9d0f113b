#!/bin/bash
# What the console's browser tests need besides Debian's chromium (from
# scripts/install-deps.sh): Node.js 20 or later and playwright-core, pinned
# in tests/console/package-lock.json. Never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")/../tests/console"
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$major" -lt 20 ]; then
  echo "the console tests need Node.js 20 or later (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
