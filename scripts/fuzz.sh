#!/usr/bin/env bash
# Runs one cargo-fuzz target for a bounded time, seeded by its committed
# corpus (fuzz/corpus/<target>, only read: inputs libFuzzer finds go to a
# scratch dir under $REKEY_TEST_DIR). Exits non-zero on a crash, a panic, an
# input that runs longer than 10 s or a leak; the input that did it is left
# in fuzz/artifacts/<target>/.
# Usage: scripts/fuzz.sh TARGET SECONDS
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS}
secs=${2:?usage: scripts/fuzz.sh TARGET SECONDS}
scratch=${REKEY_TEST_DIR:-/tmp}/fuzz-corpus-$target
mkdir -p "$scratch"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo-fuzz builds with -Z sanitizer flags: nightly, or stable told to allow them.
toolchain=()
if command -v rustup >/dev/null && rustup toolchain list | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
cargo "${toolchain[@]}" fuzz run "$target" "$scratch" "corpus/$target" -- -max_total_time="$secs" -timeout=10
