#!/usr/bin/env bash
# Install (once) and run a real OpenStack Keystone 30 on 127.0.0.1 for the
# identity tests: SQLite, fernet tokens, one gunicorn worker (two workers make
# SQLite answer "database is locked" under load), and the projects, users and
# roles the tests use.
#
#   scripts/keystone.sh start    install if missing, set up and start if not
#                                running, wait until it answers, print its URL
#   scripts/keystone.sh stop     stop the instance started here (by PID file)
#   scripts/keystone.sh status   print the URL and exit 0 if it is running,
#                                exit 3 otherwise
#
# Environment:
#   REKEY_TEST_DIR   scratch root             (default /tmp/rekey-test)
#   REKEY_KS_VENV    Python venv for keystone (default $REKEY_TEST_DIR/venv-keystone)
#   KEYSTONE_PORT    listen port              (default 5000)
#   KEYSTONE_TOKEN_EXPIRATION  token lifetime in seconds (default keystone's 3600;
#                    the identity tests run a private Keystone with a short one)
#
# What start makes (all in domain Default; password of every user = its name
# followed by "-pw", e.g. member-a-pw):
#   admin (bootstrap, admin in project admin), password "admin-pw"
#   project rekey-a: admin-a (admin), member-a (member), reader-a (reader)
#   project rekey-b: member-b (member)
#   project service: barbican (admin and service), Barbican's auth_token user;
#     rekey (admin and service), the service user rekey
#     validates tokens with; it also holds member, inherited, on every project
#     of the domain, so it can act in a volume's own project in Barbican.
# The volume endpoints (block-storage, volumev3) are for a test to set: see
# docs/identity.md.
#
# State (config, database, fernet keys, logs, PID file) lives in
# $REKEY_TEST_DIR/keystone.
set -euo pipefail

TEST_DIR=${REKEY_TEST_DIR:-/tmp/rekey-test}
VENV=${REKEY_KS_VENV:-$TEST_DIR/venv-keystone}
PORT=${KEYSTONE_PORT:-5000}
STATE=$TEST_DIR/keystone
PIDFILE=$STATE/gunicorn.pid
URL=http://127.0.0.1:$PORT/v3
READY_TIMEOUT_S=60
STOP_TIMEOUT_S=20

log() { echo "keystone.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=lib/pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pidfile.sh"

running_pid() { pid_from_file "$PIDFILE" "gunicorn"; }

api_ready() { curl -m 5 -sf -o /dev/null "$URL"; }

install_venv() {
  [[ -f $VENV/.rekey-keystone-installed ]] && return 0
  local t0=$SECONDS
  python3 -m venv "$VENV"
  export PIP_CACHE_DIR=${PIP_CACHE_DIR:-$TEST_DIR/.pip-cache}
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q 'keystone>=30,<31' gunicorn
  touch "$VENV/.rekey-keystone-installed"
  log "installed keystone into $VENV in $((SECONDS - t0))s"
}

# Database, keys and test users are made once; a restart (stop, start) keeps
# them, so tokens issued before stay valid, as with a real Keystone restart.
setup() {
  rm -rf "$STATE"
  mkdir -p "$STATE/fernet-keys" "$STATE/credential-keys" "$STATE/home"
  cat >"$STATE/keystone.conf" <<CONF
[DEFAULT]
log_file = $STATE/keystone.log
[database]
connection = sqlite:///$STATE/keystone.sqlite
[fernet_tokens]
key_repository = $STATE/fernet-keys
[fernet_receipts]
key_repository = $STATE/fernet-keys
[credential]
key_repository = $STATE/credential-keys
[token]
provider = fernet
expiration = ${KEYSTONE_TOKEN_EXPIRATION:-3600}
CONF
  local km=("$VENV/bin/keystone-manage" --config-file "$STATE/keystone.conf")
  "${km[@]}" db_sync
  "${km[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  "${km[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
  "${km[@]}" bootstrap --bootstrap-password admin-pw --bootstrap-admin-url "$URL" \
    --bootstrap-public-url "$URL" --bootstrap-internal-url "$URL" --bootstrap-region-id RegionOne
  # keystone runs oslo.config on sys.argv, which would be gunicorn's.
  cat >"$STATE/ks_wsgi.py" <<'PY'
import sys

sys.argv = sys.argv[:1]
from keystone.wsgi.api import application  # noqa: E402,F401
PY
}

# Projects, users and roles for the tests, through Keystone's REST API as admin.
fixtures() {
  "$VENV/bin/python" - "$URL" <<'PY'
import json, sys, urllib.request

url = sys.argv[1]

def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read()
        return r.headers, (json.loads(text) if text else None)

auth = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
    "name": "admin", "domain": {"id": "default"}, "password": "admin-pw"}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
h, _ = call("POST", "/auth/tokens", auth)
tok = h["X-Subject-Token"]

def ensure_role(name):
    _, r = call("GET", "/roles?name=" + name, token=tok)
    if r["roles"]:
        return r["roles"][0]["id"]
    return call("POST", "/roles", {"role": {"name": name}}, token=tok)[1]["role"]["id"]

def project(name):
    return call("POST", "/projects", {"project": {"name": name, "domain_id": "default"}}, token=tok)[1]["project"]["id"]

def user(name, proj):
    return call("POST", "/users", {"user": {"name": name, "domain_id": "default", "password": name + "-pw",
                                            "default_project_id": proj}}, token=tok)[1]["user"]["id"]

def grant(proj, uid, role):
    call("PUT", "/projects/%s/users/%s/roles/%s" % (proj, uid, role), token=tok)

roles = {n: ensure_role(n) for n in ("admin", "member", "reader", "service")}
a, b, svc = project("rekey-a"), project("rekey-b"), project("service")
for name, proj, role in [("admin-a", a, "admin"), ("member-a", a, "member"),
                         ("reader-a", a, "reader"), ("member-b", b, "member")]:
    grant(proj, user(name, proj), roles[role])
bb = user("barbican", svc)
grant(svc, bb, roles["admin"])
grant(svc, bb, roles["service"])
rk = user("rekey", svc)
grant(svc, rk, roles["admin"])
grant(svc, rk, roles["service"])
call("PUT", "/OS-INHERIT/domains/default/users/%s/roles/%s/inherited_to_projects" % (rk, roles["member"]), token=tok)
print("projects rekey-a=%s rekey-b=%s service=%s" % (a, b, svc), file=sys.stderr)
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
  if curl -m 2 -s -o /dev/null "http://127.0.0.1:$PORT/"; then
    die "something else already listens on 127.0.0.1:$PORT (set KEYSTONE_PORT)"
  fi
  mkdir -p "$TEST_DIR"
  install_venv
  local fresh=0
  if [[ ! -f $STATE/.rekey-ready ]]; then setup; fresh=1; fi
  # keystone finds keystone.conf through OS_KEYSTONE_CONFIG_DIR.
  OS_KEYSTONE_CONFIG_DIR=$STATE HOME=$STATE/home "$VENV/bin/gunicorn" --chdir "$STATE" -b "127.0.0.1:$PORT" -w 1 --timeout 120 \
    --pid "$PIDFILE" --daemon --error-logfile "$STATE/gunicorn.log" ks_wsgi:application
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if api_ready; then
      if ((fresh)); then
        fixtures || { stop || true; die "could not create the test projects and users"; }
        touch "$STATE/.rekey-ready"
      fi
      log "up on 127.0.0.1:$PORT (pid $(running_pid || echo '?'))"
      echo "$URL"
      return 0
    fi
    sleep 0.5
  done
  log "did not answer within ${READY_TIMEOUT_S}s; last log lines:"
  tail -n 20 "$STATE/gunicorn.log" "$STATE/keystone.log" >&2 2>/dev/null || true
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
