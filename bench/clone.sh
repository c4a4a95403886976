#!/usr/bin/env bash
# Clone + rekey of a 1 GiB encrypted volume through the API, against the
# Cinder way on the same machine, in one run:
#   1. ours: POST /v3/volumes {source_volid} → status `available` (clone,
#      interim key, new key, keyslot add, persist, old keyslot destroyed),
#      for a thin source (header only) and a full one (1 GiB written).
#      Target: under 0.2 s.
#   2. the Cinder way on the same source: a full copy (`cp --sparse=never`, as
#      a generic driver's dd) + `cryptsetup luksChangeKey` with cryptsetup's
#      default KDF; ratio = ours / Cinder's.
#   3. 50 concurrent clone requests of the thin source: all must succeed;
#      p50/p99/max latency to `available` and the service's peak RSS.
# Usage: bench/clone.sh   (env REPS, default 5; scratch in $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
CONCURRENT=${CONCURRENT:-50}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p rekey-cli
R=$TARGET_DIR/release/rekey
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-clone-bench.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$R" serve --data-dir "$W/data" --listen "127.0.0.1:$PORT" >"$W/serve.out" 2>"$W/serve.log" &
echo $! >"$W/serve.pid"
cleanup() { kill "$(cat "$W/serve.pid")" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
for _ in $(seq 100); do grep -q listening "$W/serve.out" 2>/dev/null && break; sleep 0.05; done
grep -q listening "$W/serve.out" || { echo "rekey serve did not start:"; cat "$W/serve.log"; exit 1; }

echo "# rekey clone benchmark — $(date -u +%F) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(df -T "$W" | awk 'NR==2{print $2}') scratch"
echo

python3 - "$R" "$W" "$PORT" "$REPS" "$CONCURRENT" "$(cat "$W/serve.pid")" <<'EOF'
import concurrent.futures, json, os, subprocess, sys, time, urllib.request

rekey, work, port, reps, concurrent_n, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
data = os.path.join(work, "data")
base = f"http://127.0.0.1:{port}/v3"
H = {"X-Auth-Token": "bench:bench", "OpenStack-API-Version": "volume 3.64", "Content-Type": "application/json"}

def call(method, path, body=None):
    req = urllib.request.Request(base + path, method=method, headers=H,
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=120) as r:
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)

# More clones than Cinder's default quota of 10 volumes: lift it.
call("PUT", "/os-quota-sets/bench", {"quota_set": {"volumes": -1, "snapshots": -1, "gigabytes": -1, "backups": -1, "backup_gigabytes": -1}})

def wait(vid, poll=0.002):
    while True:
        _, v = call("GET", f"/volumes/{vid}")
        if v["volume"]["status"] not in ("creating", "deleting"):
            return v["volume"]
        time.sleep(poll)

def clone(src):
    t = time.perf_counter()
    st, v = call("POST", "/volumes", {"volume": {"source_volid": src}})
    assert st == 202, st
    v = wait(v["volume"]["id"])
    return time.perf_counter() - t, v

def delete(vid):
    call("DELETE", f"/volumes/{vid}")

def out(*a):
    print(*a, flush=True)

_, t = call("POST", "/types", {"volume_type": {"name": "LUKS"}})
tid = t["volume_type"]["id"]
call("POST", f"/types/{tid}/encryption", {"encryption": {"provider": "luks", "cipher": "aes-xts-plain64",
                                                         "key_size": 256, "control_location": "front-end"}})

def source(full):
    st, v = call("POST", "/volumes", {"volume": {"size": 1, "volume_type": "LUKS"}})
    v = wait(v["volume"]["id"])
    path = subprocess.check_output([rekey, "volume", "path", v["id"], "--data-dir", data], text=True).strip()
    if full:
        # Fill the data area (after the 2 MiB LUKS1 header) with ciphertext-like bytes.
        subprocess.check_call(["dd", "if=/dev/urandom", f"of={path}", "bs=1M", "seek=2", "count=1022",
                               "conv=notrunc", "status=none"])
        os.sync()
    passwd = subprocess.check_output([rekey, "key", "show", v["encryption_key_id"], "--passphrase", "--data-dir", data])
    return v, path, passwd

def cinder_way(path, passwd):
    """Full copy + luksChangeKey with cryptsetup's default KDF (old, new passphrase on stdin)."""
    dst = os.path.join(work, "cinder-clone")
    newpass = os.urandom(32).hex().encode()
    t = time.perf_counter()
    subprocess.check_call(["cp", "--sparse=never", path, dst])
    # As Cinder's _rekey_volume: no key file, "old\nnew\n" on stdin (cryptsetup
    # reads each passphrase up to a newline from a non-terminal stdin).
    p = subprocess.run(["cryptsetup", "luksChangeKey", dst, "--force-password", "--batch-mode"],
                       input=passwd + b"\n" + newpass + b"\n", capture_output=True)
    dt = time.perf_counter() - t
    assert p.returncode == 0, p.stderr.decode()
    ok = subprocess.run(["cryptsetup", "open", "--test-passphrase", "--key-file=-", dst], input=newpass).returncode == 0
    assert ok, "Cinder-way clone does not open with its new passphrase"
    os.unlink(dst)
    return dt

def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]

for label, full in (("thin source (LUKS header only)", False), ("full source (1 GiB written)", True)):
    src, path, passwd = source(full)
    alloc = os.stat(path).st_blocks * 512
    ours = []
    for _ in range(reps):
        dt, v = clone(src["id"])
        assert v["status"] == "available", v
        assert v["encryption_key_id"] != src["encryption_key_id"]
        ours.append(dt)
        delete(v["id"])
    theirs = [cinder_way(path, passwd) for _ in range(max(1, min(reps, 3)))]
    o, c = median(ours), median(theirs)
    out(f"## clone + rekey, 1 GiB LUKS1 volume, {label}; source allocated {alloc / 2**20:.0f} MiB")
    out(f"ours   (API call → available, median of {len(ours)}): {o * 1000:8.1f} ms   {'(target < 200 ms: met)' if o < 0.2 else '(target < 200 ms: NOT met)'}")
    out(f"cinder (cp --sparse=never + luksChangeKey default KDF, median of {len(theirs)}): {c * 1000:8.1f} ms")
    out(f"ratio ours/cinder: {o / c:.4f}  (cinder/ours: {c / o:.1f}x)")
    out()

# Concurrency: N clone requests at once from the thin source.
src, path, passwd = source(False)
with concurrent.futures.ThreadPoolExecutor(max_workers=concurrent_n) as ex:
    t0 = time.perf_counter()
    results = list(ex.map(lambda _: clone(src["id"]), range(concurrent_n)))
    wall = time.perf_counter() - t0
lat = sorted(r[0] for r in results)
ok = sum(1 for r in results if r[1]["status"] == "available")
keys = {r[1]["encryption_key_id"] for r in results} | {src["encryption_key_id"]}
p = lambda q: lat[min(len(lat) - 1, int(round(q * (len(lat) - 1))))]
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM"))
out(f"## {concurrent_n} concurrent clone requests (thin 1 GiB LUKS1 source)")
out(f"succeeded: {ok}/{concurrent_n}; distinct key ids (incl. source): {len(keys)}/{concurrent_n + 1}")
out(f"latency to available: p50 {p(0.5) * 1000:.0f} ms, p99 {p(0.99) * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms; wall {wall:.2f} s")
out(f"service peak RSS (VmHWM): {rss / 1024:.1f} MiB")
if ok != concurrent_n or len(keys) != concurrent_n + 1:
    sys.exit(1)
EOF
