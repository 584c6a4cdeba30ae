#!/usr/bin/env bash
# fuzz.sh: builds and runs the fuzzers (native/fuzz/README.md): the libFuzzer target of the
# native receive path (ASan + UBSan, clang-14), the libFuzzer targets of libvfio-broker's decoders
# (clients/c/tests/frame_fuzz.c: the frame reader; clients/c/tests/workload_fuzz.c: a session reading
# workload-protocol replies and events; a third of the time each: small targets), then the TypeScript fuzzer
# of a live brokerd (test/fuzz/main.ts). All always run; the exit status is non-zero if any found
# a problem.
#
#   scripts/fuzz.sh [--seconds N] [--seed S]   N seconds for each fuzzer (default 600)
#   scripts/fuzz.sh --ci [--seed S]            45 s each (15 s each clients/c target), about 130 s in all (npm run fuzz:ci)
#
# libFuzzer grows native/fuzz/build/corpus from the seeds in native/fuzz/corpus/fdrecv (which it
# only reads) and writes crashing inputs to native/fuzz/build/artifacts/; the C library's targets
# grow clients/c/build/fuzz/corpus/T from clients/c/tests/corpus/T (T: frame, workload) and write crashes to
# clients/c/build/fuzz/artifacts/; the TypeScript fuzzer writes crash reproducers and a summary to
# test-output/fuzz/. All of that is ignored by git.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds=600
seed=$(( $(date +%s) & 0x7fffffff ))
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --ci) seconds=45; shift ;;
    *) echo "fuzz.sh: unknown argument $1 (see the header of scripts/fuzz.sh)" >&2; exit 2 ;;
  esac
done

if ! command -v clang-14 >/dev/null; then
  echo "fuzz.sh: clang-14 not found; on Debian: apt-get install clang-14 libclang-rt-14-dev" >&2
  exit 2
fi

echo "== fuzz: seed $seed, $seconds s per fuzzer"
echo "== build: native/fuzz (libFuzzer + ASan + UBSan) and test/ (tsc -b)"
make -s -C native/fuzz || exit 2
make -s -C clients/c fuzz || exit 2
npx tsc -b test/tsconfig.json || exit 2

fuzz=native/fuzz/build
mkdir -p "$fuzz/corpus" "$fuzz/artifacts"
echo "== libFuzzer: fdrecv_fuzz for $seconds s"
"$fuzz/fdrecv_fuzz" -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/" \
  "$fuzz/corpus" native/fuzz/corpus/fdrecv >"$fuzz/last-run.log" 2>&1
native_rc=$?
grep -E '^#[0-9]+.*(DONE|NEW)|^stat::|ERROR|SUMMARY|check failed' "$fuzz/last-run.log" | tail -n 12
if [ $native_rc -ne 0 ]; then
  echo "libFuzzer: FAILED (exit $native_rc); crashing input in $fuzz/artifacts/, log $fuzz/last-run.log"
fi

cfuzz=clients/c/build/fuzz
cseconds=$(( seconds / 3 > 10 ? seconds / 3 : 10 ))
clib_rc=0
for target in frame workload; do
  mkdir -p "$cfuzz/corpus/$target" "$cfuzz/artifacts"
  echo "== libFuzzer: libvfio-broker ${target}_fuzz for $cseconds s"
  "$cfuzz/${target}_fuzz" -seed="$seed" -max_total_time="$cseconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$cfuzz/artifacts/" \
    "$cfuzz/corpus/$target" "clients/c/tests/corpus/$target" >"$cfuzz/$target-last-run.log" 2>&1
  rc=$?
  grep -E '^#[0-9]+.*DONE|ERROR|SUMMARY|fd leak' "$cfuzz/$target-last-run.log" | tail -n 6
  if [ $rc -ne 0 ]; then
    clib_rc=$rc
    echo "libFuzzer (clients/c ${target}_fuzz): FAILED (exit $rc); crashing input in $cfuzz/artifacts/, log $cfuzz/$target-last-run.log"
  fi
done

echo "== TypeScript: live brokerd for $seconds s (fd channel, then gRPC)"
node test/dist/fuzz/main.js --seconds "$seconds" --seed "$seed"
ts_rc=$?

echo "== fuzz: libFuzzer exit $native_rc, clients/c libFuzzer exit $clib_rc, TypeScript exit $ts_rc (seed $seed)"
[ $native_rc -eq 0 ] && [ $clib_rc -eq 0 ] && [ $ts_rc -eq 0 ]
