#!/usr/bin/env bash
# Export of a LUKS2 image against plain copies of the same bytes, in one run:
#   1. `rekey luks export` tmpfs -> tmpfs vs `dd` of the same data bytes
#      between the same files (target: ours <= 1.1x dd's time);
#   2. the same export to /dev/null with --threads 1 and --threads 2, the
#      image in the page cache, so reading is a memory copy and the cipher is
#      the bound (target: 2 threads >= 1.7x the speed of 1);
#   3. the file backend's clone copy (copy_file_range, the kernel's copy) vs
#      `cp --reflink=never` of the same file on the scratch file system
#      (target: <= 1.1x cp's time).
# Min and median of REPS runs (default 5), alternating ours and the anchor;
# section 2 runs SCALE_REPS pairs (default 15) and judges by the minimum, the
# run least disturbed by other load on a shared machine, and prints the
# cores each side kept busy (CPU time / wall time). ONLY=1|2|3 runs one.
# Usage: bench/export.sh [SIZE_MIB]   (default 1024; tmpfs scratch in $BENCH_SHM
# or /dev/shm; disk scratch for 3 in $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
REPS=${REPS:-5}
SCALE_REPS=${SCALE_REPS:-15}
ONLY=${ONLY:-}
cargo build --release -q -p rekey-cli
cargo build --release -q -p rekey-storage --example clone-copy
TARGET=${CARGO_TARGET_DIR:-$PWD/target}/release
R=$TARGET/rekey
W=$(mktemp -d "${BENCH_SHM:-/dev/shm}/rekey-export-bench.XXXXXX")
D=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-clone-copy.XXXXXX")
trap 'rm -rf "$W" "$D"' EXIT
cd "$W"
printf 'bench passphrase' > k

now() { date +%s%N; }
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%d %d", a[1], a[int((NR+1)/2)]}'; }
ms() { awk -v n="$1" 'BEGIN {printf "%.1f", n/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }

echo "# rekey export benchmark — $(date -u '+%F %H:%M UTC') — $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# XTS kernel: $($R luks benchmark -c aes-xts-plain64 -s 512 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["selected"])')"
echo

$R luks format --type luks2 --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
   --size $(( SIZE_MIB + 16 ))M --key-file k img
head -c $(( SIZE_MIB << 20 )) /dev/urandom > plain
$R luks import --key-file k plain img
OFF=$((16 << 20))

if [[ -z $ONLY || $ONLY == 1 ]]; then
echo "## 1. export ${SIZE_MIB} MiB LUKS2 (aes-xts-plain64 512-bit, 4 KiB sectors), tmpfs -> tmpfs"
ours=(); theirs=()
for i in $(seq "$REPS"); do
  rm -f out; t=$(now); $R luks export --key-file k img out; ours+=($(( $(now) - t )))
  rm -f out; t=$(now); dd if=img of=out bs=4M iflag=skip_bytes skip=$OFF status=none; theirs+=($(( $(now) - t )))
done
rm -f out; $R luks export --key-file k img out; cmp -s out plain || { echo "ERROR: export differs from the plaintext"; exit 1; }
read -r omin omed <<<"$(stats "${ours[@]}")"; read -r tmin tmed <<<"$(stats "${theirs[@]}")"
echo "  ours min $(ms "$omin") / median $(ms "$omed") ms; dd min $(ms "$tmin") / median $(ms "$tmed") ms"
echo "  ratio ours/dd: min $(ratio "$omin" "$tmin"), median $(ratio "$omed" "$tmed")  (target <= 1.1)"
rm -f out
echo
fi

if [[ -z $ONLY || $ONLY == 2 ]]; then
echo "## 2. export to /dev/null, image in the page cache: --threads 1 vs 2 ($SCALE_REPS pairs)"
cat img >/dev/null
one=(); two=(); cpu1=(); cpu2=()
# GNU time's user+sys of the whole process: what the cipher work cost,
# whatever the wall clock did under other load.
timed() { /usr/bin/time -f '%U %S' -o cpu.txt "$@"; awk '{printf "%d", ($1 + $2) * 1e9}' cpu.txt; }
for i in $(seq "$SCALE_REPS"); do
  t=$(now); c=$(timed $R luks export --threads 1 --key-file k img /dev/null); one+=($(( $(now) - t ))); cpu1+=("$c")
  t=$(now); c=$(timed $R luks export --threads 2 --key-file k img /dev/null); two+=($(( $(now) - t ))); cpu2+=("$c")
done
read -r amin amed <<<"$(stats "${one[@]}")"; read -r bmin bmed <<<"$(stats "${two[@]}")"
read -r _ c1 <<<"$(stats "${cpu1[@]}")"; read -r _ c2 <<<"$(stats "${cpu2[@]}")"
echo "  1 thread min $(ms "$amin") / median $(ms "$amed") ms; 2 threads min $(ms "$bmin") / median $(ms "$bmed") ms"
echo "  CPU time (median): 1 thread $(ms "$c1") ms, 2 threads $(ms "$c2") ms; cores busy at the minimum: $(ratio "$c1" "$amin") / $(ratio "$c2" "$bmin")"
echo "  scaling (time 1 / time 2): min $(ratio "$amin" "$bmin"), median $(ratio "$amed" "$bmed")  (target >= 1.7)"
echo
fi

if [[ -z $ONLY || $ONLY == 3 ]]; then
echo "## 3. clone copy of a full ${SIZE_MIB} MiB volume file on $(df -T "$D" | awk 'NR==2{print $2}') ($D)"
cp img "$D/img"; sync
"$TARGET/examples/clone-copy" "$D/data" "$D/img" >/dev/null
SRC=$(ls "$D"/data/volumes/*src* 2>/dev/null | head -1)
[[ -f $SRC ]] || { echo "ERROR: no source volume file under $D/data"; exit 1; }
ours=(); theirs=()
for i in $(seq "$REPS"); do
  rm -f "$D/b"; sync
  read -r ns kind dst <<<"$("$TARGET/examples/clone-copy" "$D/data" "$D/img")"; ours+=("$ns")
  sync
  t=$(now); cp --reflink=never "$SRC" "$D/b" && sync "$D/b"; theirs+=($(( $(now) - t )))
done
cmp -s "$dst" "$SRC" || { echo "ERROR: clone copy differs"; exit 1; }
read -r omin omed <<<"$(stats "${ours[@]}")"; read -r tmin tmed <<<"$(stats "${theirs[@]}")"
echo "  ours (FileBackend::clone_volume, $kind: copy + fsync + rename + dir fsync) min $(ms "$omin") / median $(ms "$omed") ms"
echo "  cp --reflink=never + sync FILE: min $(ms "$tmin") / median $(ms "$tmed") ms"
echo "  ratio ours/cp: min $(ratio "$omin" "$tmin"), median $(ratio "$omed" "$tmed")  (target <= 1.1)"
fi
