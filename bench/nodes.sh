#!/usr/bin/env bash
# 200 keyslot-mode clone requests of a 1 GiB encrypted volume, all sent at
# once, against three set-ups in one run:
#   1. one node on SQLite (the anchor: today's configuration),
#   2. one node on PostgreSQL,
#   3. three nodes on one PostgreSQL and one shared data directory, the
#      requests spread round-robin.
# For each: throughput (clones/s, first request to last `available`), p50
# and p99 of request → `available`, peak RSS per node (VmHWM); and the ratio
# of each throughput to the anchor's. Target: p99 under 2 s everywhere.
# Needs a PostgreSQL: scripts/postgres.sh start (REKEY_TEST_PG_URL), or set
# REKEY_TEST_PG_URL yourself.
# After the table, where the time went: each state's mean step time (from
# every node's /metrics) and its share of a clone's time to `available`.
# Usage: bench/nodes.sh   (env N, default 200; CONFIGS, default
# sqlite-1,pg-1,pg-3, the set-ups to run — the first one run is the anchor;
# scratch in $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
: "${REKEY_TEST_PG_URL:?run scripts/postgres.sh start and export REKEY_TEST_PG_URL}"
cargo build --release -q -p rekey-cli
R=$TARGET_DIR/release/rekey
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-nodes-bench.XXXXXX")
cleanup() {
  for f in "$W"/*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

echo "# rekey nodes benchmark — $(date -u +%F) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) — $N clones each"
echo

python3 - "$R" "$W" "$N" "$REKEY_TEST_PG_URL" "${CONFIGS:-sqlite-1,pg-1,pg-3}" <<'PY'
import json, os, re, socket, subprocess, sys, threading, time, urllib.request, uuid

rekey, work, n, pg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].rstrip("/")
configs = sys.argv[5].split(",")
H = {"X-Auth-Token": "bench", "Content-Type": "application/json", "OpenStack-API-Version": "volume 3.64"}

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def req(port, method, path, body=None):
    r = urllib.request.Request(f"http://127.0.0.1:{port}/v3{path}", method=method, headers=H,
                               data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(r, timeout=120) as resp:
        return json.loads(resp.read() or b"null")

def start(tag, data, url, name, keys):
    port = free_port()
    out = open(f"{work}/{tag}-{name}.out", "w")
    p = subprocess.Popen([rekey, "serve", "--data-dir", data, "--listen", f"127.0.0.1:{port}",
                          "--database-url", url, "--node-name", name] + keys,
                         stdout=out, stderr=open(f"{work}/{tag}-{name}.log", "w"))
    open(f"{work}/{tag}-{name}.pid", "w").write(str(p.pid))
    for _ in range(200):
        if "listening" in open(f"{work}/{tag}-{name}.out").read():
            return p, port
        time.sleep(0.05)
    raise SystemExit(f"{tag}/{name} did not start: " + open(f"{work}/{tag}-{name}.log").read())

def wait_available(port, vid):
    while True:
        v = req(port, "GET", f"/volumes/{vid}")["volume"]
        if v["status"] == "available":
            return
        if v["status"] not in ("creating",):
            raise SystemExit(f"volume {vid} ended {v['status']}")
        time.sleep(0.01)

def createdb(name):
    rest = pg.split("://", 1)[1]
    user, hostport = rest.split("@", 1)
    host, port = hostport.split(":", 1)
    subprocess.run(["createdb", "-h", host, "-p", port, "-U", user, name], check=True)
    return f"{pg}/{name}"

def run(tag, url, nodes, keys=()):
    data = f"{work}/{tag}"
    procs = [start(tag, data, url, f"node{i}", list(keys)) for i in range(nodes)]
    ports = [p for _, p in procs]
    # N clones are past Cinder's default quota of 10 volumes: lift it.
    req(ports[0], "PUT", "/os-quota-sets/bench", {"quota_set": {"volumes": -1, "snapshots": -1, "gigabytes": -1, "backups": -1, "backup_gigabytes": -1}})
    t = req(ports[0], "POST", "/types", {"volume_type": {"name": "LUKS", "extra_specs": {"rekey:mode": "keyslot"}}})["volume_type"]["id"]
    req(ports[0], "POST", f"/types/{t}/encryption", {"encryption": {"provider": "luks2", "cipher": "aes-xts-plain64", "key_size": 256, "control_location": "front-end"}})
    src = req(ports[0], "POST", "/volumes", {"volume": {"size": 1, "volume_type": "LUKS"}})["volume"]["id"]
    wait_available(ports[0], src)
    # One watcher per run, not one poller per clone: 200 threads each
    # asking every 10 ms would be a load of their own on the same two
    # cores. It lists the volumes still `creating` every 20 ms (the
    # latency's resolution); a clone sent before a listing and missing from
    # it is done at that listing's answer.
    sent, lat, admitted, lock, stop = {}, {}, [], threading.Lock(), threading.Event()
    def watch():
        while not stop.is_set():
            with lock:
                asked = dict(sent)
            listed = {v["id"] for v in req(ports[0], "GET", "/volumes?status=creating&limit=1000")["volumes"]}
            now = time.monotonic()
            with lock:
                for vid, t0 in asked.items():
                    if vid not in listed and vid not in lat:
                        lat[vid] = now - t0
                        del sent[vid]
            time.sleep(0.02)
    def one(i):
        port = ports[i % len(ports)]
        t0 = time.monotonic()
        vid = req(port, "POST", "/volumes", {"volume": {"source_volid": src, "name": f"c{i}"}})["volume"]["id"]
        with lock:
            sent[vid] = t0
            admitted.append(time.monotonic() - t0)
    w = threading.Thread(target=watch)
    w.start()
    t0 = time.monotonic()
    th = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for x in th: x.start()
    for x in th: x.join()
    while True:
        with lock:
            if len(lat) == n:
                break
        time.sleep(0.01)
    wall = time.monotonic() - t0
    stop.set(); w.join()
    bad = [v["id"] for v in req(ports[0], "GET", "/volumes/detail?limit=1000")["volumes"] if v["id"] in lat and v["status"] != "available"]
    if bad:
        raise SystemExit(f"{tag}: {len(bad)} clones did not end available: {bad[:5]}")
    lat = list(lat.values())
    steps, calls = {}, {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            text = resp.read().decode()
        for m in re.finditer(r'^rekey_step_seconds_(sum|count)\{[^}]*kind="clone",state="([a-z_]+)",outcome="done"\} (\S+)$', text, re.M):
            s = steps.setdefault(m.group(2), [0.0, 0])
            s[0 if m.group(1) == "sum" else 1] += float(m.group(3))
        for m in re.finditer(r'^rekey_(key_manager|backend)_call_seconds_(sum|count)\{node="[^"]*",op="([a-z_]+)",outcome="ok"\} (\S+)$', text, re.M):
            s = calls.setdefault(f"{m.group(1).replace('_', ' ')} {m.group(3)}", [0.0, 0])
            s[0 if m.group(2) == "sum" else 1] += float(m.group(4))
    rss, cpu = [], []
    for p, _ in procs:
        for line in open(f"/proc/{p.pid}/status"):
            if line.startswith("VmHWM:"):
                rss.append(int(line.split()[1]) // 1024)
        # CPU time the node used in all (user + system), seconds.
        f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
        cpu.append((int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
        p.terminate(); p.wait()
    lat.sort()
    admitted.sort()
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    return {"tag": tag, "nodes": nodes, "throughput": n / wall, "p50": p50, "p99": p99, "max": lat[-1], "rss": rss, "cpu": cpu, "calls": calls, "wall": wall, "steps": steps, "mean": sum(lat) / len(lat), "admit50": admitted[len(admitted) // 2], "admit99": admitted[min(len(admitted) - 1, int(len(admitted) * 0.99))]}

setups = {
    "sqlite-1": lambda: run("sqlite-1", f"sqlite://{work}/sqlite-1/rekey.sqlite", 1),
    "pg-1": lambda: run("pg-1", createdb("bench_" + uuid.uuid4().hex[:12]), 1),
    "pg-3": lambda: run("pg-3", createdb("bench_" + uuid.uuid4().hex[:12]), 3),
    # The same three nodes with a key manager made to be shared (OpenBao,
    # scripts/openbao.sh start) instead of one SQLite key file in the
    # shared data directory, whose writes the nodes must take turns at.
    "pg-3-vault": lambda: run("pg-3-vault", createdb("bench_" + uuid.uuid4().hex[:12]), 3,
                              ["--key-manager", "vault", "--vault-url", os.environ["REKEY_VAULT_URL"],
                               "--vault-kv-path", "bench-" + uuid.uuid4().hex[:12]]),
}
results = [setups[c]() for c in configs]
anchor = results[0]["throughput"]
print("| set-up | nodes | clones/s | ratio to 1 node SQLite | p50 s | p99 s | max s | peak RSS per node MiB | CPU s per node (whole run) | request → 202 p50 / p99 s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in results:
    print(f"| {r['tag']} | {r['nodes']} | {r['throughput']:.1f} | {r['throughput'] / anchor:.2f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['max']:.3f} | {', '.join(map(str, r['rss']))} | {', '.join(f'{c:.1f}' for c in r['cpu'])} | {r['admit50']:.3f} / {r['admit99']:.3f} |")
print()
print("| set-up | " + " | ".join(f"{st} ms (share)" for st in results[0]["steps"]) + " | rest of mean latency ms |")
print("|---|" + "---|" * (len(results[0]["steps"]) + 1))
for r in results:
    cells, total = [], 0.0
    for st in results[0]["steps"]:
        sm, c = r["steps"].get(st, [0.0, 0])
        mean = sm / c if c else 0.0
        total += mean
        cells.append(f"{mean * 1000:.1f} ({mean / r['mean']:.0%})")
    print(f"| {r['tag']} | " + " | ".join(cells) + f" | {(r['mean'] - total) * 1000:.1f} |")
print()
print("Calls, mean ms (count):")
for r in results:
    print(f"- {r['tag']}: " + ", ".join(f"{k} {sm / c * 1000:.1f} ({c})" for k, (sm, c) in sorted(r["calls"].items()) if c))
ok = all(r["p99"] < 2.0 for r in results)
print()
print("target p99 < 2 s:", "met" if ok else "NOT met")
PY
