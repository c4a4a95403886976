#!/usr/bin/env bash
# Install (once) the real OpenStack command-line clients the API tests drive
# `rekey serve` with: python-openstackclient (`openstack`) and
# python-cinderclient (`cinder`), in a private venv.
#
#   scripts/clients.sh            install if missing, print the venv path
#   scripts/clients.sh --path     print the venv path only (no install)
#
# Environment:
#   REKEY_TEST_DIR      scratch root (default /tmp/rekey-test)
#   REKEY_CLIENTS_VENV  venv path    (default $REKEY_TEST_DIR/venv-clients)
#
# The tests read REKEY_CLIENTS_VENV and fail loudly when the venv is missing.
set -euo pipefail

TEST_DIR=${REKEY_TEST_DIR:-/tmp/rekey-test}
VENV=${REKEY_CLIENTS_VENV:-$TEST_DIR/venv-clients}
# Bounded so a new major release cannot silently change what the tests drive.
PACKAGES=('python-openstackclient>=7,<9' 'python-cinderclient>=9,<10')

log() { echo "clients.sh: $*" >&2; }

if [[ ${1:-} == --path ]]; then
  echo "$VENV"
  exit 0
fi

installed() {
  [[ -x $VENV/bin/openstack && -x $VENV/bin/cinder ]] &&
    "$VENV/bin/cinder" --version >/dev/null 2>&1
}

if ! installed; then
  log "installing ${PACKAGES[*]} into $VENV"
  mkdir -p "$TEST_DIR"
  python3 -m venv "$VENV" || {
    log "python3 -m venv failed; installing python3-venv"
    apt-get install -y python3-venv >/dev/null
    python3 -m venv "$VENV"
  }
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}"
  installed || { log "install finished but the clients do not run"; exit 1; }
fi
echo "$VENV"
