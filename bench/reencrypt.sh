#!/usr/bin/env bash
# Re-encryption of SIZE_MIB (default 1024) in place on disk, against its two
# anchors in the same run (issue 16):
#   dd    `dd if=f of=f bs=4M conv=notrunc,fsync`: every byte rewritten once
#         in place — target ours/dd <= 1.25
#   cs    `cryptsetup reencrypt --force-offline-reencrypt`, same resilience
#         (checksum) and KDF (pbkdf2 1000 for every keyslot and digest) —
#         target ours/cryptsetup <= 0.3
# and our peak RSS (GNU time's maximum resident set) — target <= 96 MiB.
# Each run is on a fresh copy of one image (cp + sync, so it starts in the
# page cache as after any write); ours, dd and cryptsetup alternate; REPS
# rounds (default 5); prints min and median of each and the ratios of both.
# HOTZONES="16M 64M 256M" runs ours once per hotzone size in each round
# (default: ours with the CLI's default only); THREADS=N passes --threads.
# REKEY_BIN=path uses that binary instead of building one.
# Usage: bench/reencrypt.sh [SIZE_MIB]   (scratch in $BENCH_DIR or /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-1024}
REPS=${REPS:-5}
HOTZONES=${HOTZONES:-default}
# REKEY_BIN: a binary already built (skips the build)
if [ -z "${REKEY_BIN:-}" ]; then
  cargo build --release -q -p rekey-cli
  REKEY_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/rekey
fi
R=$(realpath "$REKEY_BIN")
W=$(mktemp -d "${BENCH_DIR:-/tmp}/rekey-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
cd "$W"
printf 'passphrase' > k
KDF=(--pbkdf pbkdf2 --pbkdf-force-iterations 1000)
THR=(); [ -n "${THREADS:-}" ] && THR=(--threads "$THREADS")

now() { date +%s%N; }
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.0f %.0f\n", a[1], a[int((NR+1)/2)]}'; }
ms() { awk -v n="$1" 'BEGIN {printf "%.0f", n/1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
fresh() { rm -f a.img; cp base.img a.img; sync; }

echo "# re-encrypt ${SIZE_MIB} MiB in place — $(date -u +%FT%TZ) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# kernel selected: $($R luks benchmark --json | sed -n 's/.*"selected": *"\([^"]*\)".*/\1/p')"
truncate -s $(( (SIZE_MIB + 16) << 20 )) base.img
cryptsetup -q luksFormat --type luks2 --sector-size 4096 "${KDF[@]}" --key-file k base.img
head -c $(( SIZE_MIB << 20 )) /dev/urandom > plain
$R luks import --key-file k plain base.img

declare -A ours rss
dd_t=(); cs_t=()
for i in $(seq "$REPS"); do
  for hz in $HOTZONES; do
    HZ=(); [ "$hz" != default ] && HZ=(--hotzone-size "$hz")
    fresh
    t=$(now)
    /usr/bin/time -f %M -o rss.txt "$R" luks reencrypt "${KDF[@]}" "${HZ[@]}" "${THR[@]}" --key-file k a.img 2>/dev/null
    ours[$hz]="${ours[$hz]:-} $(( $(now) - t ))"
    rss[$hz]="${rss[$hz]:-} $(cat rss.txt)"
    if [ "$i" = 1 ]; then
      $R luks export --key-file k a.img out && cmp -s out plain || { echo "ERROR: plaintext differs after our re-encryption ($hz)"; exit 1; }
      rm -f out
    fi
  done
  fresh
  t=$(now); dd if=a.img of=a.img bs=4M conv=notrunc,fsync status=none; dd_t+=($(( $(now) - t )))
  fresh
  t=$(now); cryptsetup -q reencrypt --force-offline-reencrypt --resilience checksum "${KDF[@]}" --key-file k a.img; cs_t+=($(( $(now) - t )))
done
read -r dmin dmed < <(stats "${dd_t[@]}")
read -r cmin cmed < <(stats "${cs_t[@]}")
echo "dd conv=notrunc,fsync: min $(ms "$dmin") ms, median $(ms "$dmed") ms"
echo "cryptsetup reencrypt (checksum): min $(ms "$cmin") ms, median $(ms "$cmed") ms"
for hz in $HOTZONES; do
  # shellcheck disable=SC2086
  read -r omin omed < <(stats ${ours[$hz]})
  # shellcheck disable=SC2086
  rmax=$(printf '%s\n' ${rss[$hz]} | sort -rn | head -1)
  echo "ours, hotzone $hz${THREADS:+, $THREADS threads}: min $(ms "$omin") ms, median $(ms "$omed") ms, peak RSS $(( rmax / 1024 )) MiB;" \
    "ours/dd $(ratio "$omin" "$dmin") (min) $(ratio "$omed" "$dmed") (median);" \
    "ours/cryptsetup $(ratio "$omin" "$cmin") (min) $(ratio "$omed" "$cmed") (median)"
done
