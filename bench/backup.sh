#!/usr/bin/env bash
# Backup of a 1 GiB encrypted volume holding 10 MiB of data, through the API,
# and the anchor on the same file in the same run:
#   1. ours: POST /v3/backups → `available`: time, and bytes on disk of the
#      backup (chunks + manifest). Target: within 2× of the data written.
#   2. incremental after 1 MiB of changes: bytes stored (target ≈ 1 MiB).
#   3. restore to a new volume (ends in the rekey step): time.
#   4. anchor: `qemu-img convert -c -O qcow2` of the same raw file (skips
#      zeros, compresses): time and size; ratios ours / anchor.
# Usage: bench/backup.sh   (scratch in $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p rekey-cli
R=$TARGET_DIR/release/rekey
command -v qemu-img >/dev/null || { echo "qemu-img missing: apt-get install qemu-utils" >&2; exit 1; }
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-backup-bench.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$R" serve --data-dir "$W/data" --listen "127.0.0.1:$PORT" >"$W/serve.out" 2>"$W/serve.log" &
echo $! >"$W/serve.pid"
cleanup() { kill "$(cat "$W/serve.pid")" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$W/serve.out" 2>/dev/null && break; sleep 0.05; done
grep -q listening "$W/serve.out" || { echo "rekey serve did not start:"; cat "$W/serve.log"; exit 1; }

echo "# rekey backup benchmark — $(date -u +%F) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(df -T "$W" | awk 'NR==2{print $2}') scratch"
echo

python3 - "$R" "$W" "$PORT" <<'PY'
import json, os, subprocess, sys, time, urllib.request

rekey, work, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = os.path.join(work, "data")
base = f"http://127.0.0.1:{port}/v3"
H = {"X-Auth-Token": "bench:bench", "OpenStack-API-Version": "volume 3.64", "Content-Type": "application/json"}

def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, headers=H,
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=300) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)

def wait(kind, vid, busy):
    while True:
        _, v = call("GET", f"/{kind}s/{vid}")
        if v[kind]["status"] not in busy:
            return v[kind]
        time.sleep(0.005)

def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.stat(os.path.join(root, f)).st_blocks * 512
    return total

MiB = 1 << 20
_, t = call("POST", "/types", {"volume_type": {"name": "LUKS"}})
tid = t["volume_type"]["id"]
call("POST", f"/types/{tid}/encryption", {"encryption": {"provider": "luks", "cipher": "aes-xts-plain64",
                                                         "key_size": 256, "control_location": "front-end"}})
_, v = call("POST", "/volumes", {"volume": {"size": 1, "volume_type": "LUKS"}})
vol = wait("volume", v["volume"]["id"], ("creating",))
path = subprocess.check_output([rekey, "volume", "path", vol["id"], "--data-dir", data], text=True).strip()
keyfile = os.path.join(work, "pass")
with open(keyfile, "wb") as f:
    f.write(subprocess.check_output([rekey, "key", "show", vol["encryption_key_id"], "--passphrase", "--data-dir", data]))
plain = os.path.join(work, "plain")
with open(plain, "wb") as f:
    f.write(os.urandom(10 * MiB))
subprocess.check_call([rekey, "luks", "import", "--key-file", keyfile, plain, path])

def backup(incremental):
    t0 = time.perf_counter()
    _, b = call("POST", "/backups", {"backup": {"volume_id": vol["id"], "incremental": incremental}})
    b = wait("backup", b["backup"]["id"], ("creating",))
    dt = time.perf_counter() - t0
    assert b["status"] == "available", b
    return b, dt, du(os.path.join(data, "backups", b["id"]))

full, t_full, s_full = backup(False)
print(f"full backup, 1 GiB volume, 10 MiB written: {t_full*1000:.0f} ms, {s_full/MiB:.2f} MiB on disk "
      f"({s_full/(10*MiB):.2f}× the data written; target ≤ 2×), {full['object_count']} chunks")

# Change 1 MiB in place (plaintext offset 4 MiB) and back up incrementally.
with open(plain, "r+b") as f:
    f.seek(4 * MiB)
    f.write(os.urandom(MiB))
subprocess.check_call([rekey, "luks", "import", "--key-file", keyfile, plain, path])
inc, t_inc, s_inc = backup(True)
print(f"incremental after 1 MiB changed: {t_inc*1000:.0f} ms, {s_inc/MiB:.2f} MiB on disk, {inc['object_count']} chunk(s) (target ≈ 1 MiB)")

t0 = time.perf_counter()
_, r = call("POST", f"/backups/{inc['id']}/restore", {"restore": {"volume_id": None}})
rv = wait("volume", r["restore"]["volume_id"], ("creating",))
t_restore = time.perf_counter() - t0
assert rv["status"] == "available", rv
print(f"restore to a new volume (+ rekey): {t_restore*1000:.0f} ms")

# Anchor: qemu-img's compressed qcow2 of the same raw file (zeros skipped).
q = os.path.join(work, "anchor.qcow2")
t0 = time.perf_counter()
subprocess.check_call(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", path, q])
t_q = time.perf_counter() - t0
# File length: st_blocks of the fresh qcow2 reads 0 on some filesystems.
s_q = os.path.getsize(q)
print(f"anchor qemu-img convert -c -O qcow2: {t_q*1000:.0f} ms, {s_q/MiB:.2f} MiB")
print(f"ratio ours/anchor: time {t_full/t_q:.2f}, size {s_full/s_q:.2f}")
PY
