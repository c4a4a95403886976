#!/usr/bin/env bash
# A throw-away PostgreSQL (Debian's `postgresql` package) on 127.0.0.1 for the
# tests that run the service on PostgreSQL.
#
#   scripts/postgres.sh start    initdb (once) and start if not running, wait
#                                until it answers, print `export
#                                REKEY_TEST_PG_URL=postgres://…` (a base URL:
#                                tests make one database per test under it)
#   scripts/postgres.sh stop     stop the instance started here (pg_ctl -D, by
#                                its PID file)
#   scripts/postgres.sh status   print the URL and exit 0 if it is running,
#                                exit 3 otherwise
#
# Environment:
#   REKEY_TEST_DIR   scratch root     (default /tmp/rekey-test)
#   PG_PORT          listen port      (default 5432)
#   PG_BIN           server binaries  (default the newest /usr/lib/postgresql/*/bin)
#
# PostgreSQL refuses to run as root: as root the cluster belongs to an
# unprivileged system user, `rekey-pg`, made if missing. State (data, socket,
# log) lives in $REKEY_TEST_DIR/postgres. Trust authentication, 127.0.0.1
# only: a test database, never a real one.
set -euo pipefail

TEST_DIR=${REKEY_TEST_DIR:-/tmp/rekey-test}
PORT=${PG_PORT:-5432}
STATE=$TEST_DIR/postgres
DATA=$STATE/data
SOCK=$STATE/sock
LOG=$STATE/postgres.log
PG_USER=rekey-pg
URL=postgres://rekey@127.0.0.1:$PORT

log() { echo "postgres.sh: $*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=lib/pidfile.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/pidfile.sh"

pg_bin() {
  if [[ -n ${PG_BIN:-} ]]; then echo "$PG_BIN"; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n $d ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql)"
  echo "$d"
}

# Runs a server binary as the cluster's owner.
as_owner() {
  if [[ $(id -u) == 0 ]]; then
    runuser -u "$PG_USER" -- "$@"
  else
    "$@"
  fi
}

# The postmaster's PID (first line of postmaster.pid) if that process is alive
# and really is a postgres server of this data directory.
running_pid() { pid_from_file "$DATA/postmaster.pid" postgres; }

ready() {
  "$(pg_bin)/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U rekey 2>/dev/null
}

start() {
  local bin
  bin=$(pg_bin)
  if running_pid >/dev/null && ready; then
    echo "export REKEY_TEST_PG_URL=$URL"
    return 0
  fi
  mkdir -p "$STATE" "$SOCK"
  if [[ $(id -u) == 0 ]]; then
    id -u "$PG_USER" >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin "$PG_USER"
    chown "$PG_USER" "$STATE" "$SOCK"
    # Every parent must be searchable by the owner.
    chmod o+x "$TEST_DIR"
  fi
  if [[ ! -f $DATA/PG_VERSION ]]; then
    rm -rf "$DATA"
    as_owner "$bin/initdb" -D "$DATA" -A trust -U rekey -E UTF8 >"$STATE/initdb.log" 2>&1 \
      || { cat "$STATE/initdb.log" >&2; die "initdb failed"; }
  fi
  as_owner "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-p $PORT -k $SOCK -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=on" start >/dev/null \
    || { tail -20 "$LOG" >&2; die "pg_ctl start failed"; }
  ready || die "PostgreSQL started but does not answer on 127.0.0.1:$PORT"
  log "running on 127.0.0.1:$PORT (pid $(running_pid))"
  echo "export REKEY_TEST_PG_URL=$URL"
}

stop() {
  running_pid >/dev/null || { log "not running"; return 0; }
  as_owner "$(pg_bin)/pg_ctl" -D "$DATA" -m fast -w -t 30 stop >/dev/null
  log "stopped"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status)
    if running_pid >/dev/null && ready; then echo "$URL"; exit 0; fi
    exit 3 ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
