#!/usr/bin/env bash
# Crypto primitives of the LUKS engine against cryptsetup and openssl, in one
# run: PBKDF2-SHA256 and Argon2id vs cryptsetup, AES-XTS at 4 KiB sectors vs
# `openssl speed`. Prints each ratio and a markdown table at the end.
#   bench/crypto.sh            all sections
#   bench/crypto.sh xts        only the sections whose name contains "xts"
#   REKEY_BENCH_QUICK=1 bench/crypto.sh   smoke run with small sizes
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cryptsetup openssl cargo; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y cryptsetup-bin openssl)" >&2; exit 1; }
done

echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tools:   $(openssl version | cut -d' ' -f1-2), $(cryptsetup --version)"
echo

cargo bench -q -p rekey-luks --bench crypto -- "$@"
