#!/usr/bin/env bash
# Benchmarks of the LUKS engine against its anchors, in one run:
#   1. change-key: ours vs `cryptsetup luksChangeKey`, equal KDF parameters
#      (pbkdf2 1000 iterations; argon2id 64 MiB, t=4, p=1) — target ratio <= 1.0
#   2. re-encrypt a 1 GiB image: ours vs `cryptsetup reencrypt
#      --force-offline-reencrypt` — target ratio <= 0.6
#   3. export a 1 GiB LUKS1 image: ours vs `qemu-img convert` — target <= 0.8
# Usage: bench/luks.sh [SIZE_MIB]   (default 1024; scratch in $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
REPS=${REPS:-7}
cargo build --release -q -p rekey-cli
R=${CARGO_TARGET_DIR:-$PWD/target}/release/rekey
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
printf 'first passphrase' > k1; printf 'second passphrase' > k2

now() { date +%s%N; }
# median of the arguments (nanoseconds)
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { awk -v n="$1" 'BEGIN {printf "%.1f", n/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a/b}'; }

echo "# rekey LUKS benchmarks — $(date -u +%F) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo

echo "## change-key (median of $REPS, whole process, 20 MiB LUKS2 image)"
for kdf in "pbkdf2 --pbkdf-force-iterations 1000" "argon2id --pbkdf-force-iterations 4 --pbkdf-memory 65536 --pbkdf-parallel 1"; do
  truncate -s 20M img
  # shellcheck disable=SC2086
  cryptsetup -q luksFormat --type luks2 --pbkdf $kdf --key-file k1 img
  ours=(); theirs=()
  for i in $(seq "$REPS"); do
    t=$(now); $R luks change-key --pbkdf $kdf --key-file k1 --new-key-file k2 img 2>/dev/null; ours+=($(( $(now) - t )))
    t=$(now); $R luks change-key --pbkdf $kdf --key-file k2 --new-key-file k1 img 2>/dev/null; ours+=($(( $(now) - t )))
    t=$(now); cryptsetup -q luksChangeKey --pbkdf $kdf --key-file k1 img k2; theirs+=($(( $(now) - t )))
    t=$(now); cryptsetup -q luksChangeKey --pbkdf $kdf --key-file k2 img k1; theirs+=($(( $(now) - t )))
  done
  o=$(median "${ours[@]}"); c=$(median "${theirs[@]}")
  echo "  ${kdf%% *}: ours $(ms "$o") ms, cryptsetup $(ms "$c") ms, ratio $(ratio "$o" "$c")"
  rm -f img
done
echo

echo "## re-encrypt ${SIZE_MIB} MiB of data (LUKS2 as cryptsetup formats it, aes-xts-plain64 512-bit, pbkdf2 1000)"
truncate -s $(( (SIZE_MIB + 16) << 20 )) base.img
cryptsetup -q luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file k1 base.img
head -c $(( SIZE_MIB << 20 )) /dev/urandom > plain
$R luks import --key-file k1 plain base.img
# Disk-bound and noisy on a shared machine: alternate the two, median of
# REENC_REPS (default 3), each on a fresh copy of the same image.
ours=(); theirs=()
for i in $(seq "${REENC_REPS:-3}"); do
  cp base.img a.img; cp base.img b.img; sync
  t=$(now); $R luks reencrypt --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file k1 a.img 2>/dev/null; ours+=($(( $(now) - t )))
  sync
  t=$(now); cryptsetup -q reencrypt --force-offline-reencrypt --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file k1 b.img; theirs+=($(( $(now) - t )))
  sync
done
o=$(median "${ours[@]}"); c=$(median "${theirs[@]}")
echo "  ours $(ms "$o") ms ($(awk -v s="$SIZE_MIB" -v n="$o" 'BEGIN {printf "%.0f", s/(n/1e9)}') MiB/s), cryptsetup $(ms "$c") ms, ratio $(ratio "$o" "$c") (median of ${REENC_REPS:-3}; ours $(for x in "${ours[@]}"; do printf '%s ' "$(ms "$x")"; done)ms, cryptsetup $(for x in "${theirs[@]}"; do printf '%s ' "$(ms "$x")"; done)ms)"
$R luks export --key-file k1 a.img out && cmp -s out plain || { echo "  ERROR: plaintext differs after our re-encryption"; exit 1; }
rm -f a.img b.img base.img out
echo

echo "## export ${SIZE_MIB} MiB LUKS1 image to a raw file"
$R luks format --type luks1 --pbkdf-force-iterations 1000 --size $(( (SIZE_MIB + 2) << 20 )) --key-file k1 l1.img
head -c $(( SIZE_MIB << 20 )) plain > p1
$R luks import --key-file k1 p1 l1.img; sync
ours=(); theirs=()
for i in 1 2 3; do
  rm -f o1 o2
  t=$(now); $R luks export --key-file k1 l1.img o1; ours+=($(( $(now) - t )))
  t=$(now); qemu-img convert --object secret,id=s,file=k1 --image-opts "driver=luks,key-secret=s,file.filename=l1.img" -O raw o2; theirs+=($(( $(now) - t )))
done
cmp -s o1 o2 || { echo "  ERROR: exports differ"; exit 1; }
o=$(median "${ours[@]}"); c=$(median "${theirs[@]}")
echo "  ours $(ms "$o") ms, qemu-img convert $(ms "$c") ms, ratio $(ratio "$o" "$c")"
