#!/bin/bash
# Coverage-guided fuzzing (cargo-fuzz, libFuzzer, on the nightly toolchain)
# of what reprise reads from hostile hands: qcow2 images, objects in the
# region's store, CloudStack requests (fuzz/fuzz_targets). Each target runs
# RUNS executions (default 100000, the short run scripts/test.sh does; a long
# run: RUNS=5000000 scripts/fuzz.sh) from its corpus in fuzz/corpus/TARGET,
# and prints what it executed. A crash fails the run and leaves its input in
# fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
RUNS=${RUNS:-100000}
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: the nightly Rust toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi
for target in qcow2_image store_objects cloudstack_request; do
  # A scratch copy of the corpus: what a short run finds is not kept.
  work=$(mktemp -d)
  cp -r "corpus/$target/." "$work/"
  log=$(mktemp)
  if ! cargo +nightly fuzz run "$target" "$work" -- \
      -runs="$RUNS" -max_len=65536 -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz.sh: $target failed (its input is in fuzz/artifacts/$target)" >&2
    exit 1
  fi
  echo "fuzz $target: $(grep -E '^Done [0-9]+ runs' "$log" || tail -1 "$log")"
  rm -rf "$work" "$log"
done
