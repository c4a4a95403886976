#!/usr/bin/env bash
# RBD benchmarks, in one run, on a real single-node Ceph:
#   1. clone + rekey latency of a 1 GiB encrypted volume: copy-on-write clone
#      (snapshot, protect, rbd clone, rename: what RbdBackend::clone_volume
#      does) vs the full-copy fallback (snapshot, rbd copy of it, rename,
#      snapshot removed), each followed by `rekey luks change-key` of the
#      clone (PBKDF2-1000 keyslot, as the service uses for machine keys).
#   2. re-encryption throughput (`rekey luks reencrypt`) of a 1 GiB volume on
#      RBD vs the same volume as a file; anchors: `rbd bench` sequential
#      write of the same size on the same cluster, and cryptsetup's offline
#      re-encryption of the file.
#
# RBD re-encryption runs REPS times (default 3), each round followed by the
# `rbd bench` anchor on a fresh image, so the two see the same cluster load;
# min and median of each are printed, and the ratio of the medians.
#
# Usage: bench/rbd.sh [SIZE_MIB]   (default 1024)
#   ONLY=clone|reencrypt runs one section; BENCH_PREFIX (default bench-)
#   names the images, so runs on a shared cluster do not meet;
#   IO_THREADS (default 16) is `rbd bench --io-threads`; HOTZONE (default
#   256M, the engine default) is the re-encryption's --hotzone-size.
# Cluster: $CEPH_CONF if set, else a private one started here with
# scripts/ceph.sh (REKEY_TEST_DIR and CEPH_MON_PORT, default 3350) and
# stopped at the end. Scratch files in $BENCH_DIR or /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZE_MIB=${1:-1024}
REPS=${REPS:-3}
POOL=rbd
ONLY=${ONLY:-all}
P=${BENCH_PREFIX:-bench-}
IO_THREADS=${IO_THREADS:-16}
HOTZONE=${HOTZONE:-256M}

cargo build --release -q -p rekey-cli --features rbd
R=${CARGO_TARGET_DIR:-$ROOT/target}/release/rekey
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-rbd-bench.XXXXXX")
own_cluster=0
cleanup() {
  if [[ $own_cluster == 1 ]]; then
    REKEY_TEST_DIR=$W CEPH_MON_PORT=$PORT WIPE=1 "$ROOT/scripts/ceph.sh" stop || true
  elif [[ -n ${CEPH_CONF:-} ]]; then
    for img in $(rbd ls "$POOL" 2>/dev/null | grep "^$P" || true); do
      rbd snap purge "$POOL/$img" >/dev/null 2>&1 || true
      rbd rm --no-progress "$POOL/$img" >/dev/null 2>&1 || true
    done
  fi
  rm -rf "$W"
}
trap cleanup EXIT
if [[ -z ${CEPH_CONF:-} ]]; then
  PORT=${CEPH_MON_PORT:-3350}
  own_cluster=1
  eval "$(REKEY_TEST_DIR=$W CEPH_MON_PORT=$PORT CEPH_BLOCK_SIZE=${CEPH_BLOCK_SIZE:-12G} \
    "$ROOT/scripts/ceph.sh" start 2>"$W/ceph-start.log" | grep '^export ')" \
    || { cat "$W/ceph-start.log"; exit 1; }
fi
export CEPH_CONF
cd "$W"
printf 'source volume key' > k1; printf 'clone volume key' > k2

now() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
minimum() { printf '%s\n' "$@" | sort -n | head -1; }
ms() { awk -v n="$1" 'BEGIN {printf "%.0f", n/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
mibs() { awk -v s="$1" -v n="$2" 'BEGIN {printf "%.0f", s/(n/1e9)}'; }
KDF=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
IMG_MIB=$(( SIZE_MIB + 16 ))   # the LUKS2 header area comes on top of the data

echo "# rekey RBD benchmarks — $(date -u '+%F %H:%M UTC') — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "# Ceph $(ceph --version | awk '{print $3}'), 1 mon + 1 OSD (bluestore on a sparse file), pool size 1, all on 127.0.0.1; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# Source volume: LUKS2 made by rekey, filled with SIZE_MIB of random plaintext.
rbd create --size "${IMG_MIB}M" "$POOL/${P}src"
$R luks format -d k1 "${KDF[@]}" "rbd:$POOL/${P}src"
head -c $(( SIZE_MIB << 20 )) /dev/urandom > plain
t=$(now); $R luks import -d k1 plain "rbd:$POOL/${P}src"; imp=$(( $(now) - t ))
echo "setup: imported ${SIZE_MIB} MiB of plaintext into rbd:$POOL/${P}src in $(ms "$imp") ms ($(mibs "$SIZE_MIB" "$imp") MiB/s)"
echo

if [[ $ONLY != reencrypt ]]; then
echo "## 1. clone + rekey of a ${SIZE_MIB} MiB encrypted volume (median of $REPS; rbd CLI steps, one process each)"
t=$(now); for _ in 1 2 3 4 5; do rbd info "$POOL/${P}src" >/dev/null; done; rbd_start=$(( ($(now) - t) / 5 ))
cow_clone=(); cow_total=(); full_clone=(); full_total=(); rekey_t=()
for i in $(seq "$REPS"); do
  # Copy-on-write, as RbdBackend::clone_volume.
  t0=$(now)
  rbd snap create --no-progress "$POOL/${P}src@clone-cow$i"
  rbd snap protect "$POOL/${P}src@clone-cow$i"
  rbd clone "$POOL/${P}src@clone-cow$i" "$POOL/${P}cow$i.tmp"
  rbd rename "$POOL/${P}cow$i.tmp" "$POOL/${P}cow$i"
  t1=$(now)
  $R luks change-key -d k1 --new-key-file k2 "${KDF[@]}" "rbd:$POOL/${P}cow$i" >/dev/null 2>&1
  t2=$(now)
  cow_clone+=($(( t1 - t0 ))); cow_total+=($(( t2 - t0 ))); rekey_t+=($(( t2 - t1 )))
  # Full copy, as RbdBackend with full_copy_clones = true.
  t0=$(now)
  rbd snap create --no-progress "$POOL/${P}src@clone-full$i"
  rbd cp --no-progress "$POOL/${P}src@clone-full$i" "$POOL/${P}full$i.tmp"
  rbd rename "$POOL/${P}full$i.tmp" "$POOL/${P}full$i"
  rbd snap rm --no-progress "$POOL/${P}src@clone-full$i"
  t1=$(now)
  $R luks change-key -d k1 --new-key-file k2 "${KDF[@]}" "rbd:$POOL/${P}full$i" >/dev/null 2>&1
  t2=$(now)
  full_clone+=($(( t1 - t0 ))); full_total+=($(( t2 - t0 ))); rekey_t+=($(( t2 - t1 )))
  # Both clones open with the new key only, and the source still with its own.
  for c in "${P}cow$i" "${P}full$i"; do
    $R luks test-key -d k2 "rbd:$POOL/$c" >/dev/null 2>&1
    if $R luks test-key -d k1 "rbd:$POOL/$c" >/dev/null 2>&1; then echo "ERROR: $c still opens with the source key"; exit 1; fi
  done
  $R luks test-key -d k1 "rbd:$POOL/${P}src" >/dev/null 2>&1
  rbd rm --no-progress "$POOL/${P}cow$i"; rbd snap unprotect "$POOL/${P}src@clone-cow$i"
  rbd snap rm --no-progress "$POOL/${P}src@clone-cow$i"; rbd rm --no-progress "$POOL/${P}full$i"
done
cc=$(median "${cow_clone[@]}"); ct=$(median "${cow_total[@]}")
fc=$(median "${full_clone[@]}"); ft=$(median "${full_total[@]}"); rk=$(median "${rekey_t[@]}")
echo "  copy-on-write: clone $(ms "$cc") ms + change-key = $(ms "$ct") ms"
echo "  full copy:     clone $(ms "$fc") ms + change-key = $(ms "$ft") ms"
echo "  change-key alone (rekey process on an rbd: image): $(ms "$rk") ms; one rbd CLI process: $(ms "$rbd_start") ms"
echo "  ratio copy-on-write / full copy (clone + rekey): $(ratio "$ct" "$ft")  (full copy $(ratio "$ft" "$ct")x slower)"
echo

fi

if [[ $ONLY != clone ]]; then
echo "## 2. re-encrypt ${SIZE_MIB} MiB (LUKS2 aes-xts-plain64 512-bit, $HOTZONE hotzones; $REPS rounds, rbd bench after each)"
rbd cp --no-progress "$POOL/${P}src" "$POOL/${P}re"
rbd export --no-progress "$POOL/${P}src" file.img >/dev/null
cp file.img anchor.img; sync
o_rbd=(); b_write=()
for i in $(seq "$REPS"); do
  t=$(now); $R luks reencrypt -d k1 "${KDF[@]}" --hotzone-size "$HOTZONE" "rbd:$POOL/${P}re" >/dev/null 2>&1; o_rbd+=($(( $(now) - t )))
  rbd create --size "${IMG_MIB}M" "$POOL/${P}raw"
  t=$(now)
  rbd bench --io-type write --io-pattern seq --io-size 4M --io-threads "$IO_THREADS" --io-total "${SIZE_MIB}M" "$POOL/${P}raw" >/dev/null
  b_write+=($(( $(now) - t )))
  rbd rm --no-progress "$POOL/${P}raw"
  echo "  round $i: rekey on RBD $(ms "${o_rbd[-1]}") ms, rbd bench write $(ms "${b_write[-1]}") ms, ratio $(ratio "${b_write[-1]}" "${o_rbd[-1]}")"
done
$R luks export -d k1 "rbd:$POOL/${P}re" out >/dev/null && cmp -s <(head -c $(( SIZE_MIB << 20 )) out) plain \
  || { echo "ERROR: plaintext differs after re-encrypting on RBD"; exit 1; }
rbd rm --no-progress "$POOL/${P}re"; rm -f out
t=$(now); $R luks reencrypt -d k1 "${KDF[@]}" --hotzone-size "$HOTZONE" file.img >/dev/null 2>&1; sync; o_file=$(( $(now) - t ))
t=$(now); cryptsetup -q reencrypt --force-offline-reencrypt "${KDF[@]}" --hotzone-size "$HOTZONE" --key-file k1 anchor.img; sync; c_file=$(( $(now) - t ))
om=$(median "${o_rbd[@]}"); bm=$(median "${b_write[@]}")
echo "  rekey on RBD:   median $(ms "$om") ms ($(mibs "$SIZE_MIB" "$om") MiB/s), min $(ms "$(minimum "${o_rbd[@]}")") ms"
echo "  rekey on file:  $(ms "$o_file") ms ($(mibs "$SIZE_MIB" "$o_file") MiB/s)"
echo "  anchor cryptsetup reencrypt on the file: $(ms "$c_file") ms ($(mibs "$SIZE_MIB" "$c_file") MiB/s)"
echo "  anchor rbd bench seq write 4M x$IO_THREADS (no crypto, write only): median $(ms "$bm") ms ($(mibs "$SIZE_MIB" "$bm") MiB/s), min $(ms "$(minimum "${b_write[@]}")") ms"
echo "  ratio RBD / file throughput: $(ratio "$o_file" "$om")"
echo "  ratio rekey on RBD / rbd bench write throughput (medians): $(ratio "$bm" "$om")"
$R luks export -d k1 file.img out >/dev/null && cmp -s <(head -c $(( SIZE_MIB << 20 )) out) plain \
  || { echo "ERROR: plaintext differs after re-encrypting the file"; exit 1; }
fi
