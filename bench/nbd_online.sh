#!/usr/bin/env bash
# Write p99 latency through a plaintext NBD export with and without an online
# re-encryption running (anchor: the same export, the same client, in the same
# run); prints both and the ratio. See crates/nbd/benches/online_latency.rs.
# Usage: bench/nbd_online.sh   (RUNS, SIZE_MB, HOTZONE from the environment;
# ports 18200-18299)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cryptsetup >/dev/null || { echo "cryptsetup missing (cryptsetup-bin)" >&2; exit 1; }
exec cargo bench -q -p rekey-nbd --bench online_latency
