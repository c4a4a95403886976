#!/usr/bin/env bash
# What Keystone costs a request, in one run, against the same requests under
# noauth (the anchor):
#   - the Keystone round trip itself: GET /v3/auth/tokens (service token +
#     X-Subject-Token), what an uncached validation adds;
#   - GET /v3/{project}/volumes/detail with 100 volumes;
#   - a clone request (POST /volumes {source_volid} → 202, the API's part);
# each under noauth, Keystone with the token cached (token_cache_seconds =
# 300, the default) and Keystone uncached (token_cache_seconds = 0: every
# request validates). The three servers are measured in turn, rep by rep.
# Prints median and min of REPS runs (clones: at most 20), and the ratios to
# noauth.
# Needs a Keystone with the test users (scripts/keystone.sh start) in
# REKEY_KEYSTONE_URL.
# Usage: bench/identity.sh   (env REPS, default 30; PROFILE release|dev,
#        default release; scratch in $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-30}
PROFILE=${PROFILE:-release}
KS=${REKEY_KEYSTONE_URL:?set REKEY_KEYSTONE_URL (scripts/keystone.sh start prints it)}
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [[ $PROFILE == release ]]; then
  cargo build --release -q -p rekey-cli; R=$TARGET_DIR/release/rekey
else
  cargo build -q -p rekey-cli; R=$TARGET_DIR/debug/rekey
fi
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-identity-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# serve NAME CACHE_SECONDS|noauth → prints the port
serve() {
  local name=$1 cache=$2 port; port=$(free_port)
  mkdir -p "$W/$name"
  if [[ $cache == noauth ]]; then
    "$R" serve --data-dir "$W/$name/data" --listen "127.0.0.1:$port" >"$W/$name/out" 2>"$W/$name/log" &
  else
    cat >"$W/$name/rekey.toml" <<TOML
listen = "127.0.0.1:$port"
data_dir = "$W/$name/data"
[auth]
strategy = "keystone"
auth_url = "$KS"
username = "rekey"
password = "rekey-pw"
project_name = "service"
token_cache_seconds = $cache
TOML
    "$R" serve --config "$W/$name/rekey.toml" >"$W/$name/out" 2>"$W/$name/log" &
  fi
  pids+=($!)
  for _ in $(seq 200); do grep -q listening "$W/$name/out" 2>/dev/null && break; sleep 0.05; done
  grep -q listening "$W/$name/out" || { echo "rekey serve ($name) did not start:" >&2; cat "$W/$name/log" >&2; exit 1; }
  echo "$port"
}
P_NOAUTH=$(serve noauth noauth)
P_CACHED=$(serve cached 300)
P_UNCACHED=$(serve uncached 0)

echo "# rekey identity benchmark — $(date -u '+%F %H:%M UTC') — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), profile $PROFILE, $REPS runs each"
echo

python3 - "$KS" "$REPS" "$P_NOAUTH" "$P_CACHED" "$P_UNCACHED" <<'EOF'
import json, statistics, sys, time, urllib.error, urllib.request

ks, reps = sys.argv[1], int(sys.argv[2])
ports = {"noauth": int(sys.argv[3]), "keystone, cached": int(sys.argv[4]), "keystone, uncached": int(sys.argv[5])}

def req(url, method="GET", headers=None, body=None):
    r = urllib.request.Request(url, method=method, headers=headers or {},
                               data=None if body is None else json.dumps(body).encode())
    if body is not None:
        r.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(r, timeout=60) as resp:
        raw = resp.read()
        return resp.status, resp.headers, (json.loads(raw) if raw else None)

def token(user, project):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"id": "default"}, "password": user + "-pw"}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    _, h, b = req(ks + "/auth/tokens", "POST", body=body)
    return h["X-Subject-Token"], b["token"]["project"]["id"]

user_tok, project = token("member-a", "rekey-a")
service_tok, _ = token("rekey", "service")
admin_tok, _ = token("admin-a", "rekey-a")

def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t

def stats(xs):
    return statistics.median(xs) * 1e3, min(xs) * 1e3

rtt = [timed(lambda: req(ks + "/auth/tokens", headers={"X-Auth-Token": service_tok, "X-Subject-Token": user_tok}))
       for _ in range(reps)]

# Populate each server, then measure them in turn, rep by rep, so that the
# shared machine's noise falls on all three alike.
servers = {}
for name, port in ports.items():
    noauth = name == "noauth"
    base = f"http://127.0.0.1:{port}/v3/" + ("bench" if noauth else project)
    h = {"X-Auth-Token": "bench:bench" if noauth else user_tok, "OpenStack-API-Version": "volume 3.64"}
    # 100 volumes are past Cinder's default quota of 10: lift it (an admin's call).
    admin_h = dict(h, **{"X-Auth-Token": "bench:bench" if noauth else admin_tok})
    req(base + "/os-quota-sets/" + ("bench" if noauth else project), "PUT", admin_h, {"quota_set": {"volumes": -1, "snapshots": -1, "gigabytes": -1, "backups": -1, "backup_gigabytes": -1}})
    ids = [req(base + "/volumes", "POST", h, {"volume": {"size": 1, "name": f"v{i}"}})[2]["volume"]["id"] for i in range(100)]
    servers[name] = (base, h, ids)

def settled(base, h, vid):
    while req(base + "/volumes/" + vid, headers=h)[2]["volume"]["status"] == "creating":
        time.sleep(0.01)

for base, h, ids in servers.values():
    for vid in ids:
        settled(base, h, vid)
    req(base + "/volumes/detail", headers=h)  # warm the token cache and the database

detail = {n: [] for n in servers}
clone = {n: [] for n in servers}
for rep in range(reps):
    for name, (base, h, ids) in servers.items():
        t = time.perf_counter()
        _, _, body = req(base + "/volumes/detail", headers=h)
        detail[name].append(time.perf_counter() - t)
        assert len(body["volumes"]) == 100, len(body["volumes"])
    if rep < 20:
        for name, (base, h, ids) in servers.items():
            t = time.perf_counter()
            st, _, v = req(base + "/volumes", "POST", h, {"volume": {"source_volid": ids[0]}})
            clone[name].append(time.perf_counter() - t)
            assert st == 202
            settled(base, h, v["volume"]["id"])
            # keep the listing at 100 volumes
            assert req(base + "/volumes/" + v["volume"]["id"], "DELETE", h)[0] == 202
            while True:
                try:
                    req(base + "/volumes/" + v["volume"]["id"], headers=h)
                except urllib.error.HTTPError as e:
                    assert e.code == 404
                    break
                time.sleep(0.01)
results = {n: (stats(detail[n]), stats(clone[n])) for n in servers}

print(f"Keystone round trip (GET /v3/auth/tokens): median {stats(rtt)[0]:.2f} ms, min {stats(rtt)[1]:.2f} ms")
print()
print("| auth | GET /volumes/detail (100) median / min ms | ratio to noauth | clone request median / min ms | ratio to noauth |")
print("|---|---|---|---|---|")
(dn, _), (cn, _) = results["noauth"]
for name, ((dm, dmin), (cm, cmin)) in results.items():
    print(f"| {name} | {dm:.2f} / {dmin:.2f} | {dm / dn:.2f} | {cm:.2f} / {cmin:.2f} | {cm / cn:.2f} |")
EOF
