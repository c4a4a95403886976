#!/usr/bin/env bash
# The XTS kernels and the dispatcher on this CPU and on CPUs this machine is
# not. First natively: the kernel tests (which the main test run leaves to
# this script) of every kernel this CPU has must pass, and those of the
# kernels it lacks must FAIL with "NOT RUN ON THIS CPU", printed below as
# not run. Then the rekey-luks unit tests of crypto::cipher run under
# qemu-user's TCG with CPU models that lack features, so the default build
# (no compile-time target features) is shown to pick the right kernel and
# not die with SIGILL.
#
#   model     what QEMU's TCG gives (7.2 and 10.0) kernel expected
#   max       aes pclmulqdq avx2 vaes, NO vpclmulqdq, no AVX-512   aesni
#   Westmere  aes pclmulqdq, no AVX               aesni
#   qemu64    no AES-NI                           portable
#
# On each model the kernel tests of the kernels it can run must pass, and
# those of the kernels it cannot must FAIL with "NOT RUN ON THIS CPU" (the
# test's own message): those are printed as not run, loudly, never as
# passes. TCG emulates neither VPCLMULQDQ nor AVX-512, so the two VAES
# kernels run only natively, on a CPU that has them. Needs qemu-user
# (apt-get install qemu-user).
# Usage: scripts/xts-qemu.sh      (exit 0 when every expectation held)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v qemu-x86_64 >/dev/null || { echo "missing qemu-x86_64 (apt-get install -y qemu-user)" >&2; exit 1; }

bin=$(cargo test -q -p rekey-luks --lib --no-run --message-format=json 2>/dev/null |
      python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "rekey_luks" and m.get("executable"):
        print(m["executable"])' | tail -1)
[[ -x $bin ]] || { echo "could not build the rekey-luks unit-test binary" >&2; exit 1; }

all_kernels=(vaes_avx512 vaes_avx2 aesni portable)
fail=0
not_run=()
# What the test of kernel $2 did in test output $1: "passed", "not run: <what
# the CPU lacks>" (the test's own NOT RUN ON THIS CPU failure), or "failed".
outcome() {
    local t="crypto::cipher::tests::xts_kernel_${2}_matches_openssl_and_ieee_1619" lacks
    lacks=$(grep -o "${2/_/-} XTS kernel NOT RUN ON THIS CPU: it lacks [^;]*" <<<"$1" | head -1 || true)
    if grep -q "test $t ... ok" <<<"$1"; then
        echo passed
    elif grep -q "test $t ... FAILED" <<<"$1" && [[ -n $lacks ]]; then
        echo "not run: $lacks"
    else
        echo failed
    fi
}

run_model() {
    local model=$1 expect=$2; shift 2
    local runs=("$@")
    echo "== qemu-x86_64 -cpu $model (expect kernel $expect)"
    local out
    out=$(REKEY_EXPECT_XTS=$expect qemu-x86_64 -cpu "$model" "$bin" --test-threads 1 crypto::cipher::tests:: 2>&1 | grep -v 'TCG doesn.t support' || true)
    for t in dispatcher_selects_the_best_kernel_the_cpu_reports unsupported_kernels_are_refused_not_run xts_matches_openssl_evp_xts; do
        grep -q "test crypto::cipher::tests::$t ... ok" <<<"$out" || { echo "FAIL: $t on $model"; fail=1; }
    done
    for k in "${all_kernels[@]}"; do
        local o
        o=$(outcome "$out" "$k")
        if [[ " ${runs[*]} " == *" $k "* ]]; then
            if [[ $o == passed ]]; then echo "  ran and passed: $k"; else echo "FAIL: $k kernel on $model: $o"; fail=1; fi
        elif [[ $o == "not run: "* ]]; then
            echo "  NOT RUN on -cpu $model: ${o#not run: }"
            not_run+=("$model: ${k/_/-}")
        else
            echo "FAIL: $k kernel on $model: expected the test to report it as not run, it $o"; fail=1
        fi
    done
    if (( fail )); then echo "$out" | tail -40; fi
}

# Natively: whatever this CPU has must pass; the rest is reported not run.
echo "== natively, on this CPU ($(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | xargs))"
native=$("$bin" --test-threads 1 crypto::cipher::tests::xts_kernel_ 2>&1 || true)
for k in "${all_kernels[@]}"; do
    o=$(outcome "$native" "$k")
    case $o in
        passed) echo "  ran and passed: $k" ;;
        "not run: "*) echo "  NOT RUN on this CPU: ${o#not run: }"; not_run+=("this CPU: ${k/_/-}") ;;
        *) echo "FAIL: $k kernel on this CPU"; fail=1; echo "$native" | tail -40 ;;
    esac
done

run_model max aesni aesni portable
run_model Westmere aesni aesni portable
run_model qemu64 portable portable

echo
echo "XTS KERNELS NOT RUN (this CPU lacks their features, or QEMU's TCG does not emulate them): ${not_run[*]}"
if (( fail )); then echo "xts-qemu: FAILED"; exit 1; fi
echo "xts-qemu: every expectation held"
