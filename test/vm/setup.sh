#!/bin/bash
# VM suite, host preparation (root, Debian 12 x86_64): installs qemu-system-x86 from Debian (no
# recommends) and downloads -- does NOT install -- the Debian kernel (linux-image-<ver>-amd64) and
# busybox-static, then extracts the vmlinuz (+ the uncompressed vmlinux for PVH boot) and the 16
# modules the guest needs and packs a ~1.5 MB initramfs around guest/init.
# Output: $VMTEST_BUILD (default <repo>/.build/vm, git-ignored), ~140 MB. Idempotent: a complete
# build newer than guest/init is reused without asking apt anything.
# VMTEST_KERNEL_PKG pins the kernel package (e.g. linux-image-6.1.0-56-amd64).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${VMTEST_BUILD:-$repo/.build/vm}
mkdir -p "$B/debs"
t0=$SECONDS

if command -v qemu-system-x86_64 >/dev/null && [ -f "$B/vmlinuz" ] && [ -f "$B/vmlinux" ] && [ -s "$B/kver" ] \
   && [ "$B/initrd.cpio.gz" -nt "$here/guest/init" ] \
   && { [ -z "${VMTEST_KERNEL_PKG:-}" ] || [ "$(cat "$B/kver")" = "${VMTEST_KERNEL_PKG#linux-image-}" ]; }; then
  echo "setup: up to date ($(cat "$B/kver")) in $B"; exit 0
fi

# Old package lists can name a kernel that the security archive no longer serves: refresh.
apt-get update -qq
if ! command -v qemu-system-x86_64 >/dev/null; then
  echo "setup: installing qemu-system-x86 (--no-install-recommends)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >/dev/null
fi

# Kernel package: the one linux-image-amd64 currently points at, unless pinned.
KPKG=${VMTEST_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)}
[ -n "$KPKG" ] || { echo "setup: cannot resolve linux-image-amd64" >&2; exit 1; }
KVER=${KPKG#linux-image-}

cd "$B/debs"
# apt-get download runs as _apt where it can; in a root-only dir it warns and goes on as root.
ls "$KPKG"_*.deb >/dev/null 2>&1 || apt-get download -qq "$KPKG" 2>&1 | grep -v 'unsandboxed' || true
ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -qq busybox-static 2>&1 | grep -v 'unsandboxed' || true
KDEB=$(ls "$KPKG"_*.deb | head -1); BDEB=$(ls busybox-static_*.deb | head -1)

MODS="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
      9pnet 9pnet_virtio netfs fscache 9p
      irqbypass vfio vfio_virqfd vfio_iommu_type1 vfio-pci-core vfio-pci"
rm -rf "$B/x" "$B/initrd"; mkdir -p "$B/x" "$B/initrd/bin" "$B/initrd/lib/modules"
# extract only vmlinuz and the module directories needed (not the whole 400 MB tree)
K=./lib/modules/$KVER/kernel
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$B/x" --wildcards "./boot/vmlinuz-*" "$K/drivers/virtio/*" \
   "$K/net/9p/*" "$K/fs/9p/*" "$K/fs/netfs/*" "$K/fs/fscache/*" "$K/drivers/vfio/*" "$K/virt/lib/*"
dpkg-deb --fsys-tarfile "$BDEB" | tar -x -C "$B/x" ./bin/busybox
for m in $MODS; do
  f=$(find "$B/x/lib/modules" -name "$m.ko" | head -1)
  [ -n "$f" ] || { echo "setup: module $m.ko not found in $KDEB (the module list is for Debian 12's 6.1 kernels; pin VMTEST_KERNEL_PKG)" >&2; exit 1; }
  cp "$f" "$B/initrd/lib/modules/"
done
cp "$B/x/bin/busybox" "$B/initrd/bin/busybox"
cp "$here/guest/init" "$B/initrd/init"; chmod 755 "$B/initrd/init"
echo $MODS > "$B/initrd/modules.order"
(cd "$B/initrd" && find . | "$B/x/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$B/initrd.cpio.gz")
cp "$B/x/boot/vmlinuz-$KVER" "$B/vmlinuz"
# The uncompressed ELF vmlinux (~66 MB): QEMU boots it through its PVH entry point, skipping
# SeaBIOS real mode and the in-guest xz decompression (~2.3 s under TCG).
python3 - "$B/vmlinuz" "$B/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], "rb").read()
off = data.find(b"\xfd7zXZ\x00")
if off < 0:
    sys.exit("setup: no xz payload in vmlinuz (kernel not CONFIG_KERNEL_XZ?)")
open(sys.argv[2], "wb").write(lzma.LZMADecompressor().decompress(data[off:]))
PY
echo "$KVER" > "$B/kver"
rm -rf "$B/x" "$B/initrd"
echo "setup: kernel $KVER, initrd $(du -k "$B/initrd.cpio.gz" | cut -f1) KiB, in $((SECONDS-t0)) s -> $B"
