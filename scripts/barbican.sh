#!/usr/bin/env bash
# Install (once) and run a real OpenStack Barbican 23.x on 127.0.0.1 for the
# key-manager tests: SQLite database, simple_crypto plugin, no keystone
# (callers identify themselves with an X-Project-Id header) — or, with
# BARBICAN_KEYSTONE_URL set, behind Keystone: the shipped keystone pipeline
# (keystonemiddleware auth_token, service user "barbican" that
# scripts/keystone.sh makes) and Barbican's new secure-RBAC policy defaults.
#
#   scripts/barbican.sh start    install if missing, start if not running,
#                                wait until it answers, print its URL
#   scripts/barbican.sh stop     stop the instance started here (by PID file)
#   scripts/barbican.sh status   print the URL and exit 0 if it is running,
#                                exit 3 otherwise
#
# Environment:
#   REKEY_TEST_DIR   scratch root             (default /tmp/rekey-test)
#   REKEY_VENV_DIR   Python venv for barbican (default $REKEY_TEST_DIR/venv-barbican)
#   BARBICAN_PORT    listen port              (default 9311)
#   BARBICAN_KEYSTONE_URL  Keystone v3 URL: run the keystone pipeline
#
# State (config, database, logs, PID file) lives in $REKEY_TEST_DIR/barbican
# ($REKEY_TEST_DIR/barbican-keystone behind Keystone, so both can run at once).
set -euo pipefail

TEST_DIR=${REKEY_TEST_DIR:-/tmp/rekey-test}
VENV=${REKEY_VENV_DIR:-$TEST_DIR/venv-barbican}
PORT=${BARBICAN_PORT:-9311}
KEYSTONE=${BARBICAN_KEYSTONE_URL:-}
if [[ -n $KEYSTONE ]]; then STATE=$TEST_DIR/barbican-keystone; else STATE=$TEST_DIR/barbican; fi
PIDFILE=$STATE/gunicorn.pid
URL=http://127.0.0.1:$PORT
READY_TIMEOUT_S=60
STOP_TIMEOUT_S=20

log() { echo "barbican.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=lib/pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pidfile.sh"

# The PID in the PID file, if that process is alive and really is our gunicorn
# (guards against a stale file whose PID was reused by something else).
running_pid() { pid_from_file "$PIDFILE" "gunicorn"; }

# True when the API answers an authenticated (noauth) request, which proves the
# whole paste pipeline works, not only the version document at "/".
api_ready() {
  if [[ -n $KEYSTONE ]]; then
    # Behind Keystone a token-less call must be refused by auth_token (401),
    # which proves the keystone pipeline is loaded.
    [[ $(curl -m 5 -s -o /dev/null -w '%{http_code}' "$URL/v1/secrets?limit=1") == 401 ]]
  else
    curl -m 5 -sf -o /dev/null -H 'X-Project-Id: rekey-ready-probe' \
      "$URL/v1/secrets?limit=1"
  fi
}

install_venv() {
  # A marker written after a complete install, so an interrupted pip run is
  # redone instead of leaving a half-installed venv that looks usable.
  [[ -f $VENV/.rekey-barbican-installed ]] && return 0
  local t0=$SECONDS
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    log "python3 -m venv failed; installing python3-venv with apt-get"
    rm -rf "$VENV"
    command -v apt-get >/dev/null || die "python3 -m venv does not work and apt-get is missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$TEST_DIR/.pip-cache}
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q 'barbican>=23,<24' gunicorn
  touch "$VENV/.rekey-barbican-installed"
  log "installed barbican into $VENV in $((SECONDS - t0))s"
}

# Without keystone the new policy defaults (which need roles) would make every
# call 403; the legacy rules let a project manage its own secrets. Behind
# Keystone: the new defaults (member creates, members of the secret's project
# read), project scope enforced, and auth_token validating with the barbican
# service user.
policy_and_auth() {
  if [[ -z $KEYSTONE ]]; then
    printf '[oslo_policy]\nenforce_scope = False\nenforce_new_defaults = False\n'
    return
  fi
  cat <<INI
[oslo_policy]
enforce_scope = True
enforce_new_defaults = True
[keystone_authtoken]
www_authenticate_uri = ${KEYSTONE%/v3}
auth_url = $KEYSTONE
auth_type = password
username = barbican
password = barbican-pw
project_name = service
user_domain_name = Default
project_domain_name = Default
service_token_roles_required = True
INI
}

write_config() {
  mkdir -p "$STATE/home/.barbican"
  # Barbican reads oslo.config at import time in several modules, each of which
  # only looks in default places (~/.barbican/barbican.conf, /etc/barbican).
  # Pointing HOME at $STATE/home keeps everything out of /etc.
  local conf=$STATE/home/.barbican/barbican.conf
  if [[ ! -f $conf ]]; then
    local kek
    kek=$("$VENV/bin/python" -c 'import os,base64;print(base64.urlsafe_b64encode(os.urandom(32)).decode())')
    (umask 077; cat >"$conf.tmp" <<CONF
[DEFAULT]
host_href = $URL
db_auto_create = True
debug = False
log_file = $STATE/barbican-api.log
[database]
connection = sqlite:///$STATE/barbican.sqlite
[secretstore]
namespace = barbican.secretstore.plugin
enabled_secretstore_plugins = store_crypto
[crypto]
namespace = barbican.crypto.plugin
enabled_crypto_plugins = simple_crypto
[simple_crypto_plugin]
kek = $kek
$(policy_and_auth)
CONF
    )
    mv "$conf.tmp" "$conf"
  fi

  # Paste pipeline: the shipped file with /v1 switched from keystone to the
  # shipped unauthenticated pipeline. Barbican 23's
  # UnauthenticatedContextMiddleware reads req.request_id, which webob does not
  # provide, so every /v1 call would be a 500 (AttributeError: request_id); a
  # tiny filter in front of it sets that attribute.
  local data
  data=$("$VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["data"])')
  local shipped=$data/etc/barbican/barbican-api-paste.ini
  [[ -f $shipped ]] || die "barbican's paste file is missing: $shipped"
  if [[ -n $KEYSTONE ]]; then
    grep -q '^/v1: barbican-api-keystone' "$shipped" || die "the shipped paste file has no keystone pipeline for /v1"
    sed -e "s#/etc/barbican/healthcheck_disable#$STATE/healthcheck_disable#" "$shipped" >"$STATE/barbican-api-paste.ini"
    write_wsgi
    return
  fi
  sed -e 's#^/v1: barbican-api-keystone#/v1: barbican_api#' \
      -e 's#^pipeline = cors request_id http_proxy_to_wsgi unauthenticated-context#pipeline = cors request_id http_proxy_to_wsgi rekey_reqid unauthenticated-context#' \
      -e "s#/etc/barbican/healthcheck_disable#$STATE/healthcheck_disable#" \
      "$shipped" >"$STATE/barbican-api-paste.ini.tmp"
  grep -q 'rekey_reqid unauthenticated-context' "$STATE/barbican-api-paste.ini.tmp" ||
    die "the shipped paste pipeline changed; cannot insert the request_id filter"
  cat >>"$STATE/barbican-api-paste.ini.tmp" <<'INI'

[filter:rekey_reqid]
paste.filter_factory = rekey_reqid:factory
INI
  mv "$STATE/barbican-api-paste.ini.tmp" "$STATE/barbican-api-paste.ini"

  cat >"$STATE/rekey_reqid.py" <<'PY'
"""Give webob requests the request_id attribute barbican's noauth context reads."""


def factory(global_conf, **local_conf):
    def make(app):
        def middleware(environ, start_response):
            attrs = environ.setdefault('webob.adhoc_attrs', {})
            attrs['request_id'] = environ.get('openstack.request_id')
            return app(environ, start_response)
        return middleware
    return make
PY

  write_wsgi
}

# Barbican 23 ships no WSGI script (and its helper hard-codes /etc/barbican).
write_wsgi() {
  cat >"$STATE/barbican_wsgi.py" <<PY
from paste import deploy

application = deploy.loadapp('config:$STATE/barbican-api-paste.ini', name='main')
PY
}

start() {
  local pid
  if pid=$(running_pid); then
    if api_ready; then
      log "already running (pid $pid)"
      echo "$URL"
      return 0
    fi
    die "pid $pid is running but $URL does not answer; run '$0 stop' first"
  fi
  rm -f "$PIDFILE"
  if curl -m 2 -s -o /dev/null "$URL/"; then
    die "something else already listens on 127.0.0.1:$PORT (set BARBICAN_PORT)"
  fi
  mkdir -p "$STATE"
  install_venv
  write_config

  # One sync worker is plenty for SQLite. HOME also keeps gunicorn's control
  # socket (~/.gunicorn) inside $STATE.
  HOME=$STATE/home "$VENV/bin/gunicorn" --chdir "$STATE" -b "127.0.0.1:$PORT" -w 1 \
    --pid "$PIDFILE" --daemon --error-logfile "$STATE/gunicorn.log" \
    barbican_wsgi:application

  local deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if api_ready; then
      log "up on 127.0.0.1:$PORT (pid $(running_pid || echo '?'))"
      echo "$URL"
      return 0
    fi
    sleep 0.5
  done
  log "did not answer within ${READY_TIMEOUT_S}s; last log lines:"
  tail -n 20 "$STATE/gunicorn.log" "$STATE/barbican-api.log" >&2 2>/dev/null || true
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
  rm -f "$PIDFILE"
  log "stopped (pid $pid)"
}

status() {
  local pid
  if pid=$(running_pid) && api_ready; then
    log "running (pid $pid)"
    echo "$URL"
    return 0
  fi
  log "not running"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
