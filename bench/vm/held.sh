#!/bin/bash
# bench/vm/held.sh (npm run bench:held): issue 20, figure 3's second half: 10,000 idle workload
# sessions held by one brokerd under the systemd unit's RLIMIT_NOFILE (LimitNOFILE=65536), in the
# VM suite's QEMU guest (test/vm/): a real kernel where root has every capability, which a host
# without CAP_SYS_RESOURCE and a lower hard limit cannot give. A benchmark, not part of the suite:
# the guest runs bench/dist/vm/held-guest.js (brokerd on the sim backend, libvfio-broker clients
# as uid 65534; see its header) instead of test/vm/guest.js. Under TCG the times are slow and
# only the counts (sessions held, fds, RSS per session) are the figure.
# 1. Kernels: the VM suite's cache ($VMTEST_BUILD/<entry>, default <repo>/.build/vm); an entry
#    that is not complete there is made by test/vm/setup.sh (downloads, never installs).
# 2. Builds the clients (bench/workload's driver-lib, bench/vm/build/held-victim) on the host; the
#    guest sees the host's / read-only over 9p, so they run there as built. Needs `npm run build`.
# 3. Boots each kernel (no devices but 9p: the sim backend needs none) and prints the guest's
#    "HELD" lines; last line "held: N kernel(s) ok, N failed". Cleans up after itself (qemu under
#    `timeout`, its temp dir removed by a trap). Never runs the VM suite's checks, never installs a
#    kernel, and writes only bench/vm/build, bench/workload/build, a temp dir (and, through setup.sh,
#    the kernel cache, for an entry that is missing there).
# Usage: bash bench/vm/held.sh [sessions] [victim grants]   (default 10000 200)
# Env: HELD_KERNELS (default "7x deb12"), VMTEST_BUILD, VMTEST_TIMEOUT (qemu wall limit, default
#      1500 s), VMTEST_MEM (default 2G), VMTEST_SMP (default 2), VMTEST_VERBOSE=1 (whole console).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
vm=$repo/test/vm
B=${VMTEST_BUILD:-$repo/.build/vm}
N=${1:-10000}; G=${2:-200}
ok=0; failed=0

# ---- 1. kernels ------------------------------------------------------------------------------------
kernels=()
for e in ${HELD_KERNELS:-7x deb12}; do
  K="$B/$e"
  if [ -f "$K/vmlinux" ] && [ -s "$K/kver" ] && [ -f "$K/initrd.cpio.gz" ] || VMTEST_BUILD="$B" bash "$vm/setup.sh" "$e"; then
    kernels+=("$e")
  else echo "held: FAIL kernel $e: test/vm/setup.sh failed (its reason is above)"; failed=$((failed+1)); fi
done

# ---- 2. what the guest runs --------------------------------------------------------------------------
need=("$repo/services/brokerd/dist/main.js" "$repo/bench/dist/vm/held-guest.js" "$repo/clients/c/build/vfio-broker.pc")
for f in "${need[@]}"; do [ -f "$f" ] || { echo "held: missing $f (run npm run build)"; exit 1; }; done
make -s -C "$repo/bench/workload" lib || { echo "held: bench/workload's driver-lib did not build"; exit 1; }
pc() { PKG_CONFIG_PATH="$repo/clients/c/build" pkg-config "$@" vfio-broker; }
mkdir -p "$here/build"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror -O2 $(pc --cflags) -o "$here/build/held-victim" "$here/held-victim.c" $(pc --libs) \
  || { echo "held: held-victim.c did not build"; exit 1; }

# ---- 3. boot ---------------------------------------------------------------------------------------
SHARE=""; qpid=""
cleanup() { [ -n "$qpid" ] && kill "$qpid" 2>/dev/null; [ -n "$SHARE" ] && rm -rf "$SHARE" "$SHARE.console"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
for e in "${kernels[@]}"; do
  K="$B/$e"; KL=$(cat "$K/kver")
  SHARE=$(mktemp -d "${TMPDIR:-/tmp}/vfio-broker-held.XXXXXX"); LOG="$SHARE.console"
  printf "exec /usr/bin/node '%s' %s %s\n" "$repo/bench/dist/vm/held-guest.js" "$N" "$G" > "$SHARE/run-guest.sh"
  ACCEL=tcg; CPU=max  # KVM where it can run a stock kernel (as test/vm/run.sh decides)
  if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ ! -d /sys/module/kvm_pvm ]; then ACCEL=kvm; CPU=host; fi
  echo "held: [$KL] booting under $ACCEL, $N sessions, ${VMTEST_MEM:-2G} of memory, ${VMTEST_SMP:-2} CPUs"
  t0=$(date +%s)
  timeout "${VMTEST_TIMEOUT:-1500}" qemu-system-x86_64 \
    -M q35 -accel "$ACCEL" -cpu "$CPU" -smp "${VMTEST_SMP:-2}" -m "${VMTEST_MEM:-2G}" \
    -display none -nodefaults -no-user-config -serial stdio -no-reboot \
    -kernel "$K/vmlinux" -initrd "$K/initrd.cpio.gz" \
    -append "console=ttyS0 panic=-1 loglevel=4 vmtest.cmd=/bin/sh,run-guest.sh vmtest.repo=$repo" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs local,path="$SHARE",mount_tag=vmtest,security_model=none \
    -virtfs local,path="$repo",mount_tag=vmrepo,security_model=none,readonly=on,multidevs=remap \
    < /dev/null > "$LOG" 2>&1 &
  qpid=$!
  if [ "${VMTEST_VERBOSE:-0}" = 1 ]; then tail -n +1 -f "$LOG" --pid=$qpid & else
    tail -n +1 -f "$LOG" --pid=$qpid | grep --line-buffered -E '^HELD|^VMTEST-RC' | sed -u "s/^/[$KL] /" & fi
  tailpid=$!
  wait "$qpid"; qrc=$?; qpid=""
  wait "$tailpid" 2>/dev/null
  rc=$(sed -n 's/^VMTEST-RC=\([0-9]*\).*/\1/p' "$LOG" | tail -1)
  if [ "$qrc" = 0 ] && [ "$rc" = 0 ] && grep -q '^HELD-RESULT .*"ok":true' "$LOG"; then ok=$((ok+1)); else
    failed=$((failed+1))
    echo "held: FAIL [$KL] qemu $qrc (124 = timeout), guest $rc; the console's last lines:"
    tail -30 "$LOG" | sed "s/^/[$KL] /"
  fi
  echo "held: [$KL] guest $(( $(date +%s) - t0 )) s under $ACCEL"
  rm -rf "$SHARE" "$LOG"; SHARE=""
done
echo "held: $ok kernel(s) ok, $failed failed"
[ "$failed" = 0 ] && [ "$ok" -gt 0 ]
