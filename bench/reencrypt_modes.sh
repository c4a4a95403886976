#!/usr/bin/env bash
# Re-encryption per resilience mode: `rekey luks reencrypt --resilience M`
# vs `cryptsetup reencrypt --force-offline-reencrypt --resilience M`, same
# image (LUKS2 as cryptsetup formats it, aes-xts-plain64 512-bit), same KDF
# (pbkdf2, 1000 iterations), same hotzone size (cryptsetup's default for the
# mode; ours 16 MiB), each run on a fresh copy; median of REPS (default 3),
# runs of the two tools alternated. Prints ours/cryptsetup time ratios.
# Then encryption in place and decryption, both with a detached header
# (`--header`, checksum resilience, each tool its default hotzone), against
# cryptsetup's same command: encrypt starts from the plaintext image,
# decrypt from cryptsetup's encryption of it with its header. Last, encrypt
# in place with a data shift (--reduce-device-size 32M, header on the image,
# resilience datashift), against cryptsetup's same command.
# Usage: bench/reencrypt_modes.sh [SIZE_MIB]   (default 1024; scratch in $BENCH_DIR or /tmp;
#        MODES="" skips the resilience rows, MODES=checksum runs one)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
REPS=${REPS:-3}
cargo build --release -q -p rekey-cli
R=${CARGO_TARGET_DIR:-$PWD/target}/release/rekey
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
printf 'passphrase' > k
KDF=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
now() { date +%s%N; }
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ms() { awk -v n="$1" 'BEGIN {printf "%.0f", n/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

echo "# re-encryption per resilience mode — $(date -u +%FT%TZ) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1 /proc/loadavg)"
truncate -s $(( (SIZE_MIB + 16) << 20 )) base.img
cryptsetup -q luksFormat --type luks2 "${KDF[@]}" --key-file k base.img
head -c $(( SIZE_MIB << 20 )) /dev/urandom > plain
$R luks import --key-file k plain base.img
rm plain
for mode in ${MODES-checksum journal none}; do
  ours=(); theirs=()
  for i in $(seq "$REPS"); do
    cp base.img a.img; sync
    t=$(now); $R luks reencrypt --resilience $mode "${KDF[@]}" --key-file k a.img 2>/dev/null; ours+=($(( $(now) - t )))
    rm a.img; cp base.img b.img; sync
    t=$(now); cryptsetup -q reencrypt --force-offline-reencrypt --resilience $mode "${KDF[@]}" --key-file k b.img; theirs+=($(( $(now) - t )))
    rm b.img
  done
  o=$(median "${ours[@]}"); c=$(median "${theirs[@]}")
  echo "  $mode: ours $(ms "$o") ms, cryptsetup $(ms "$c") ms, ratio $(ratio "$o" "$c")  (ours: ${ours[*]}; cryptsetup: ${theirs[*]} ns)"
done

# Encrypt in place / decrypt, detached header (data at offset 0 of the image).
head -c $(( SIZE_MIB << 20 )) /dev/urandom > plain.img
cp plain.img enc.img
cryptsetup -q reencrypt --encrypt --force-offline-reencrypt --header enc.hdr "${KDF[@]}" --key-file k enc.img
for op in encrypt decrypt; do
  ours=(); theirs=()
  for i in $(seq "$REPS"); do
    for who in ours theirs; do
      rm -f a.img a.hdr
      if [ $op = encrypt ]; then cp plain.img a.img; else cp enc.img a.img; cp enc.hdr a.hdr; fi
      sync
      t=$(now)
      if [ $who = ours ]; then
        $R luks reencrypt --$op --header a.hdr "${KDF[@]}" --key-file k a.img 2>/dev/null; ours+=($(( $(now) - t )))
      else
        cryptsetup -q reencrypt --$op --force-offline-reencrypt --header a.hdr "${KDF[@]}" --key-file k a.img; theirs+=($(( $(now) - t )))
      fi
    done
  done
  rm -f a.img a.hdr
  o=$(median "${ours[@]}"); c=$(median "${theirs[@]}")
  echo "  $op (--header, checksum): ours $(ms "$o") ms, cryptsetup $(ms "$c") ms, ratio $(ratio "$o" "$c")  (ours: ${ours[*]}; cryptsetup: ${theirs[*]} ns)"
done

# Encrypt in place with a data shift: SIZE_MIB of plaintext + 32 MiB free.
cp plain.img shift.img; truncate -s $(( (SIZE_MIB + 32) << 20 )) shift.img
rm -f plain.img enc.img enc.hdr
ours=(); theirs=()
for i in $(seq "$REPS"); do
  cp shift.img a.img; sync
  t=$(now); $R luks reencrypt --encrypt --reduce-device-size 32M "${KDF[@]}" --key-file k a.img 2>/dev/null; ours+=($(( $(now) - t )))
  rm a.img; cp shift.img b.img; sync
  t=$(now); cryptsetup -q reencrypt --encrypt --force-offline-reencrypt --reduce-device-size 32M "${KDF[@]}" --key-file k b.img; theirs+=($(( $(now) - t )))
  rm b.img
done
o=$(median "${ours[@]}"); c=$(median "${theirs[@]}")
echo "  encrypt (data shift, --reduce-device-size 32M): ours $(ms "$o") ms, cryptsetup $(ms "$c") ms, ratio $(ratio "$o" "$c")  (ours: ${ours[*]}; cryptsetup: ${theirs[*]} ns)"
