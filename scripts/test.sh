#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine (run as root):
#   - installs what the tests need (apt: cryptsetup-bin, qemu-utils, libnbd-bin, Ceph;
#     pip venvs: Barbican and the OpenStack clients) where missing;
#   - starts a real Barbican and a real single-node Ceph on 127.0.0.1;
#   - builds the workspace once and runs every test;
#   - stops the services by their PID files, whatever happened.
# Scratch state lives in $REKEY_TEST_DIR (default: a new temp dir, removed after).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

own_dir=0
if [[ -z ${REKEY_TEST_DIR:-} ]]; then
  REKEY_TEST_DIR=$(mktemp -d /tmp/rekey-test.XXXXXX)
  own_dir=1
fi
export REKEY_TEST_DIR
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }

cleanup() {
  rc=$?
  step "stopping services"
  scripts/barbican.sh stop || true
  scripts/ceph.sh stop || true
  if [[ $own_dir == 1 ]]; then rm -rf "$REKEY_TEST_DIR"; fi
  exit $rc
}
trap cleanup EXIT

step "system packages"
need=()
for p in cryptsetup-bin qemu-utils libnbd-bin openssl argon2 python3 python3-venv python3-cryptography libssl-dev pkg-config curl \
         ceph-mon ceph-osd ceph-common librbd-dev librados-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if (( ${#need[@]} )); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
scripts/ceph.sh install
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

step "python venvs (OpenStack clients, Barbican) in the background"
scripts/clients.sh > "$REKEY_TEST_DIR/clients.log" 2>&1 &
clients_pid=$!

step "build (once)"
cargo build --workspace --all-targets --features rekey-cli/rbd

step "start Ceph"
eval "$(scripts/ceph.sh start | grep '^export ')"
step "start Barbican"
scripts/barbican.sh start
export REKEY_BARBICAN_URL=http://127.0.0.1:${BARBICAN_PORT:-9311}
wait "$clients_pid" || { cat "$REKEY_TEST_DIR/clients.log"; exit 1; }
REKEY_CLIENTS_VENV=$(scripts/clients.sh --path)
export REKEY_CLIENTS_VENV

step "tests"
cargo nextest run --workspace --features rekey-cli/rbd --no-fail-fast
step "done"
