#!/usr/bin/env bash
# NBD export throughput: rekey-nbd-serve against qemu-nbd serving the same
# image, the same client for both, in one run:
#   ciphertext: our raw export  vs `qemu-nbd -f raw`
#   plaintext:  our --luks export vs `qemu-nbd --image-opts driver=luks,…`
#     (LUKS1: qemu's LUKS driver reads no LUKS2)
# Per case: sequential read and write with nbdcopy (1 connection, 16
# requests in flight, 1 MiB requests), and 4 KiB reads and writes with
# `qemu-img bench` (depth 32) at a stride of 7919 blocks, which wraps
# around the image and so visits blocks in a scattered order (neither fio
# nor a random mode of qemu-img bench is available here).
# Each figure is the median of $RUNS runs (default 5); ratio = ours / qemu-nbd
# in throughput (higher is better for us).
# Usage: bench/nbd.sh   (scratch in $BENCH_DIR or /tmp; ports 18791-18792
# or $NBD_BENCH_PORT and the next one)
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p rekey-nbd --bin rekey-nbd-serve
S=$TARGET_DIR/release/rekey-nbd-serve
for t in qemu-nbd qemu-img nbdcopy cryptsetup; do
  command -v $t >/dev/null || { echo "$t missing (qemu-utils, libnbd-bin, cryptsetup-bin)" >&2; exit 1; }
done
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-512}
P1=${NBD_BENCH_PORT:-18791}; P2=$((P1 + 1))
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-nbd-bench.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$W"; }
trap cleanup EXIT

printf 'bench-passphrase' >"$W/pass"
truncate -s ${SIZE_MB}M "$W/raw.img"
head -c $((SIZE_MB << 20)) /dev/urandom >"$W/src.img"
truncate -s $((SIZE_MB + 16))M "$W/luks.img"
cryptsetup luksFormat -q --type luks1 --cipher aes-xts-plain64 --key-size 512 \
  --pbkdf-force-iterations 1000 --key-file "$W/pass" "$W/luks.img"

wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 not up" >&2; exit 1; }
start_ours() { "$S" --listen 127.0.0.1:$P1 --export e="$1" "${@:2}" 2>"$W/ours.log" & pids+=($!); wait_port $P1; }
start_qemu() { qemu-nbd -t -e 4 -x e -p $P2 -b 127.0.0.1 "$@" 2>"$W/qemu.log" & pids+=($!); wait_port $P2; }
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }

# A failing client cannot stop the script from inside $(…); it leaves a mark.
secs() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>"$W/client.err" || { echo "failed: $*: $(cat "$W/client.err")" >&2; touch "$W/failed"; echo 1; return; }; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
check() { [ ! -e "$W/failed" ] || { echo "a client run failed; no figures" >&2; exit 1; }; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
# MiB/s or IOPS from the median time of RUNS runs of a command.
# Each run starts with nothing dirty in the page cache (sync, not timed):
# otherwise 4 KiB writes wait on the write-back the sequential write left
# behind, and both servers show the disk's speed, not their own.
rate() { local amount=$1; shift; local t=(); for _ in $(seq "$RUNS"); do sync; t+=("$(secs "$@")"); done; echo "$amount / $(median "${t[@]}")" | bc -l; }

N4K=${N4K:-40000}
STRIDE=$((4096 * 7919))
measure() { # $1 = port → prints seq_read seq_write rand_read rand_write
  local u=nbd://127.0.0.1:$1/e
  local nc=(nbdcopy --connections=1 --requests=16 --request-size=1048576)
  sw=$(rate "$SIZE_MB" "${nc[@]}" "$W/src.img" "$u")
  sr=$(rate "$SIZE_MB" "${nc[@]}" "$u" null:)
  rr=$(rate "$N4K" qemu-img bench -f raw -c "$N4K" -d 32 -s 4096 -S $STRIDE "$u")
  rw=$(rate "$N4K" qemu-img bench -f raw -w -c "$N4K" -d 32 -s 4096 -S $STRIDE "$u")
  echo "$sr $sw $rr $rw"
}

echo "# rekey NBD benchmark — $(date -u '+%F %H:%M UTC') — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), ${SIZE_MB} MiB image, median of $RUNS, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-11s %-16s %12s %12s %7s\n' case measure ours qemu-nbd ratio
report() {
  local name=$1; read -r -a o <<<"$2"; read -r -a q <<<"$3"
  local labels=("seq read MiB/s" "seq write MiB/s" "4k read IOPS" "4k write IOPS")
  for i in 0 1 2 3; do
    printf '%-11s %-16s %12.1f %12.1f %7.2f\n' "$name" "${labels[$i]}" "${o[$i]}" "${q[$i]}" "$(echo "${o[$i]} / ${q[$i]}" | bc -l)"
  done
}

# Each server starts on the image with none of it in the page cache, so
# neither inherits the folios the other's writes made (their size sets what
# a later 4 KiB write costs the kernel).
uncache() { sync; dd if="$1" iflag=nocache count=0 status=none; }

uncache "$W/raw.img"; start_ours "$W/raw.img"; ours=$(measure $P1); stop_all; check
uncache "$W/raw.img"; start_qemu -f raw "$W/raw.img"; theirs=$(measure $P2); stop_all; check
report ciphertext "$ours" "$theirs"

uncache "$W/luks.img"; start_ours "$W/luks.img" --luks --key-file "$W/pass"; ours=$(measure $P1); stop_all; check
uncache "$W/luks.img"; start_qemu --object secret,id=s0,file="$W/pass" --image-opts "driver=luks,key-secret=s0,file.filename=$W/luks.img"
theirs=$(measure $P2); stop_all; check
report plaintext "$ours" "$theirs"
