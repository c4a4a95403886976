#!/usr/bin/env bash
# A throw-away single-node Ceph for rekey's RBD tests: 1 mon + 1 OSD (bluestore
# on a sparse file), pool `rbd` of size 1, everything on 127.0.0.1.
#
#   scripts/ceph.sh install   apt packages (only the missing ones)
#   scripts/ceph.sh start     start a fresh cluster; prints `export CEPH_CONF=...`
#   scripts/ceph.sh stop      stop it by its pid files (WIPE=1 also removes the dir)
#   scripts/ceph.sh status    exit 0 if the daemons of the cluster are running
#
# Env: REKEY_TEST_DIR (default /tmp/rekey-test); the cluster lives in
#      $REKEY_TEST_DIR/ceph and is wiped on every start.
#      CEPH_MON_PORT (default 3300; msgr1 listens on CEPH_MON_PORT+3489).
#      CEPH_BLOCK_SIZE (default 4G, sparse).
# No mgr is started: RBD I/O does not need one, only `ceph -s` statistics do.
set -euo pipefail

ROOT=${REKEY_TEST_DIR:-/tmp/rekey-test}
DIR=$ROOT/ceph
MON_PORT=${CEPH_MON_PORT:-3300}
MON_V1_PORT=$((MON_PORT + 3489))
BLOCK_SIZE=${CEPH_BLOCK_SIZE:-4G}
PACKAGES=(ceph-mon ceph-osd ceph-common librbd-dev librados-dev)
DAEMONS=(osd.0 mon.a)

log() { echo "ceph.sh: $*" >&2; }

# Runs "$@" every 0.1 s until it succeeds or $1 seconds pass.
wait_for() {
  local secs=$1; shift
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

pid_alive() {
  local f=$DIR/run/$1.pid pid
  [ -e "$f" ] || return 1
  pid=$(cat "$f")
  # A pid file can outlive its daemon and the number be reused: check the name too.
  kill -0 "$pid" 2>/dev/null && grep -q '^ceph-' "/proc/$pid/comm" 2>/dev/null
}

cmd_install() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "all packages present (${PACKAGES[*]})"
    return 0
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

cmd_stop() {
  local pids=() name pid
  for name in "${DAEMONS[@]}"; do
    if pid_alive "$name"; then
      pid=$(cat "$DIR/run/$name.pid")
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  # Daemons are reparented to init, which may reap them late: a zombie counts as gone.
  alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) && [ "${st:0:1}" != Z ]; }
  for pid in "${pids[@]}"; do
    local i
    for i in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then log "pid $pid ignored SIGTERM for 5 s; SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -f "$DIR"/run/*.pid
  if [ "${WIPE:-0}" = 1 ]; then rm -rf "$DIR"; fi
  return 0
}

MKFS_PID=
fail() {
  trap - ERR
  # The OSD mkfs runs in the background; do not leave it behind.
  if [ -n "$MKFS_PID" ]; then kill "$MKFS_PID" 2>/dev/null || true; wait "$MKFS_PID" 2>/dev/null || true; fi
  log "start failed: ${1:-a command failed}; logs in $DIR/log"
  for f in "$DIR"/log/*.log "$DIR"/log/*.out; do
    [ -s "$f" ] || continue
    echo "---- tail $f" >&2
    tail -n 15 "$f" >&2
  done
  cmd_stop
  exit 1
}

write_conf() {
  local fsid=$1
  cat > "$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_V1_PORT]
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
auth allow insecure global id reclaim = false
mon data avail warn = 2
mon data avail crit = 1
# test cluster: quick map propagation, no complaints about the missing mgr
paxos propose interval = 0.05
paxos min wait = 0.01
mon mgr mkfs grace = 86400
osd op num shards = 1
osd op num threads per shard = 2
bdev aio poll ms = 5

[mon]
mon data = $DIR/mon.\$id
keyring = $DIR/mon.\$id/keyring
mon cluster log file = $DIR/log/cluster.log

[osd]
osd data = $DIR/osd.\$id
keyring = $DIR/osd.\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $BLOCK_SIZE
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = 1073741824
EOF
}

osd_up() {
  ceph --connect-timeout 2 osd stat -f json 2>/dev/null | grep -q '"num_up_osds": *1'
}

cmd_start() {
  for t in ceph-mon ceph-osd ceph ceph-authtool monmaptool rbd uuidgen; do
    command -v "$t" >/dev/null || { log "missing $t: run 'scripts/ceph.sh install' first"; exit 1; }
  done
  for name in "${DAEMONS[@]}"; do
    if pid_alive "$name"; then
      log "a cluster is already running in $DIR ($name); run 'scripts/ceph.sh stop' first"
      exit 1
    fi
  done
  rm -rf "$DIR"
  mkdir -p "$DIR"/{run,log,crash,mon.a,osd.0}
  trap 'fail' ERR
  local fsid osd_uuid osd_key
  fsid=$(uuidgen)
  write_conf "$fsid"
  export CEPH_CONF=$DIR/ceph.conf

  ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/keyring" >/dev/null
  monmaptool --create --fsid "$fsid" \
    --addv a "[v2:127.0.0.1:$MON_PORT,v1:127.0.0.1:$MON_V1_PORT]" "$DIR/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring" \
    > "$DIR/log/mon-mkfs.out" 2>&1 || fail "ceph-mon --mkfs"

  # The OSD's mkfs needs nothing from the mon (uuid and key are given): run it alongside.
  osd_uuid=$(uuidgen)
  osd_key=$(ceph-authtool --gen-print-key)
  printf '[osd.0]\n\tkey = %s\n' "$osd_key" > "$DIR/osd.0/keyring"
  ceph-osd -i 0 --mkfs --no-mon-config --osd-uuid "$osd_uuid" --key "$osd_key" \
    > "$DIR/log/osd-mkfs.out" 2>&1 &
  MKFS_PID=$!

  ceph-mon -i a || fail "ceph-mon did not start (is port $MON_PORT or $MON_V1_PORT in use? set CEPH_MON_PORT)"
  wait_for 30 timeout 5 ceph --connect-timeout 2 mon stat || fail "mon did not answer within 30 s"

  printf '{"cephx_secret": "%s"}' "$osd_key" > "$DIR/osd.0/new.json"
  local osd_id
  osd_id=$(timeout 30 ceph osd new "$osd_uuid" -i "$DIR/osd.0/new.json") || fail "ceph osd new"
  rm -f "$DIR/osd.0/new.json"
  [ "$osd_id" = 0 ] || fail "unexpected osd id $osd_id"
  wait "$MKFS_PID" || { MKFS_PID=; fail "ceph-osd --mkfs"; }
  MKFS_PID=

  ceph-osd -i 0 || fail "ceph-osd did not start"
  wait_for 60 osd_up || fail "osd.0 not up within 60 s"

  timeout 60 ceph osd pool create rbd 8 8 >/dev/null 2>&1 || fail "pool create"
  timeout 60 rbd pool init rbd || fail "rbd pool init"
  trap - ERR
  log "cluster up in $DIR (mon pid $(cat "$DIR/run/mon.a.pid"), osd pid $(cat "$DIR/run/osd.0.pid"))"
  echo "export CEPH_CONF=$DIR/ceph.conf"
}

cmd_status() {
  local name
  for name in "${DAEMONS[@]}"; do
    pid_alive "$name" || { echo "$name not running"; return 1; }
  done
  echo "running; export CEPH_CONF=$DIR/ceph.conf"
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
