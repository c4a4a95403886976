#!/usr/bin/env bash
# Seeds the fuzz corpus with headers cryptsetup 2.6 makes (the oracle).
set -euo pipefail
cd "$(dirname "$0")"
t=$(mktemp -d); trap 'rm -rf "$t"' EXIT
printf pw > "$t/k"
for c in "luks1 aes-xts-plain64 256" "luks1 aes-cbc-essiv:sha256 256" "luks1 aes-xts-plain64 512"; do
  set -- $c
  truncate -s 3M "$t/i"
  cryptsetup -q luksFormat --type "$1" --cipher "$2" --key-size "$3" --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i"
  head -c 592 "$t/i" > "corpus/luks1_header/$1-${2//:/_}-$3"
  rm "$t/i"
done
for p in "pbkdf2 --pbkdf-force-iterations 1000" "argon2id --pbkdf-force-iterations 4 --pbkdf-memory 8192"; do
  truncate -s 17M "$t/i"
  cryptsetup -q luksFormat --type luks2 --pbkdf $p --label seed --key-file "$t/k" "$t/i"
  # the primary header copy (binary header + JSON area)
  head -c 16384 "$t/i" > "corpus/luks2_header/luks2-${p%% *}"
  rm "$t/i"
done
# cryptsetup's re-encryption state: after --init-only in each offline
# resilience mode, and with a hotzone in progress (cryptsetup killed mid-way
# until the header shows one).
mkdir -p corpus/reenc_metadata
for r in checksum journal none; do
  truncate -s 20M "$t/i"
  cryptsetup -q luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i"
  cryptsetup -q reencrypt --init-only --resilience $r --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i"
  head -c 16384 "$t/i" > "corpus/reenc_metadata/init-$r"
  rm "$t/i"
done
for r in checksum journal; do
  for try in $(seq 1 50); do
    truncate -s 400M "$t/i"
    cryptsetup -q luksFormat --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i"
    cryptsetup -q reencrypt --force-offline-reencrypt --resilience $r --hotzone-size 4M --pbkdf pbkdf2 \
      --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i" & pid=$!
    sleep 0.$((RANDOM % 9 + 1)); kill -9 $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
    if cryptsetup luksDump "$t/i" | grep -q in-reencryption; then
      head -c 16384 "$t/i" > "corpus/reenc_metadata/hot-$r"; rm "$t/i"; break
    fi
    rm "$t/i"
  done
done
# Encrypt in place (data shift, backward, the first segment moved to the end)
# and decrypt (cryptsetup 2.6 decrypts LUKS2 only with a detached header:
# backward, checksum): after --init-only, and killed with a hotzone in progress.
rm -f "$t/i"; truncate -s 100M "$t/i"
cryptsetup -q reencrypt --encrypt --init-only --reduce-device-size 32M --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i"
head -c 16384 "$t/i" > corpus/reenc_metadata/init-encrypt-datashift; rm "$t/i"
rm -f "$t/h"; truncate -s 20M "$t/i"
cryptsetup -q luksFormat --type luks2 --header "$t/h" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i"
cryptsetup -q reencrypt --decrypt --init-only --force-offline-reencrypt --header "$t/h" --key-file "$t/k" "$t/i"
head -c 16384 "$t/h" > corpus/reenc_metadata/init-decrypt-checksum; rm "$t/i" "$t/h"
for m in encrypt decrypt; do
  for try in $(seq 1 50); do
    rm -f "$t/i" "$t/h"; truncate -s 400M "$t/i"
    if [[ $m == encrypt ]]; then
      args=(--encrypt --reduce-device-size 32M); hdr="$t/i"
    else
      cryptsetup -q luksFormat --type luks2 --header "$t/h" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i"
      args=(--decrypt --header "$t/h" --hotzone-size 4M); hdr="$t/h"
    fi
    # decrypt spends its first second or so before the first hotzone
    [[ $m == decrypt ]] && pause=$((RANDOM % 3 + 1)).$((RANDOM % 9)) || pause=0.$((RANDOM % 9 + 1))
    cryptsetup -q reencrypt --force-offline-reencrypt "${args[@]}" --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$t/k" "$t/i" & pid=$!
    sleep "$pause"; kill -9 $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
    if cryptsetup luksDump "$hdr" 2>/dev/null | grep -q in-reencryption; then
      head -c 16384 "$hdr" > "corpus/reenc_metadata/hot-$m"; break
    fi
  done
  rm -f "$t/i" "$t/h"
done
ls -l corpus/*
