#!/bin/bash
# VM suite, host preparation (root, Debian 12 x86_64): installs qemu-system-x86 and zstd from Debian
# (no recommends) and downloads -- does NOT install -- one Debian kernel per matrix entry and
# busybox-static, then extracts the kernel (+ the uncompressed vmlinux for PVH boot) and the modules
# the guest needs and packs a ~1.5 MB initramfs around guest/init. Usage: setup.sh [deb12|7x]...
#   deb12  the kernel Debian 12's linux-image-amd64 points at (host apt sources; 6.1).
#   7x     the newest linux-image-7.*-amd64 found through an apt source list of its own
#          ($B/apt7x/sources.list: trixie-backports + sid). The host's sources are not touched:
#          apt runs with Dir::Etc::SourceList/SourceParts/State::Lists/Cache pointing into $B/apt7x.
# Output: $VMTEST_BUILD (default <repo>/.build/vm, git-ignored)/<entry>/{vmlinux,vmlinuz,
# initrd.cpio.gz,kver}, ~140 MB each. Idempotent: a complete build newer than guest/init and this
# script is reused without asking apt anything (VMTEST_REFRESH=1 re-resolves the packages).
# VMTEST_KERNEL_PKG pins the deb12 package (e.g. linux-image-6.1.0-56-amd64); VMTEST_KERNEL7_PKG
# pins the 7x one (e.g. linux-image-7.3.4+deb13-amd64).
# Module differences handled here (found in the packages themselves):
#   6.1: virtio_ring/virtio/virtio_pci*, fscache, vfio_virqfd are modules; files are plain .ko.
#   7.x: virtio and virtio_pci are built in, fscache is part of netfs, vfio_virqfd is part of vfio,
#        9pnet needs netfs; files are .ko.xz; the image package is split into linux-binary-* (the
#        vmlinuz, under /usr/lib/modules/<ver>/) and linux-modules-*; vmlinuz is zstd-compressed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
B=${VMTEST_BUILD:-$repo/.build/vm}
ENTRIES=${*:-deb12 7x}
mkdir -p "$B/debs"

fresh() {  # $1 = entry dir: complete and newer than its inputs
  local d=$1
  [ -f "$d/vmlinuz" ] && [ -f "$d/vmlinux" ] && [ -s "$d/kver" ] && [ "$d/initrd.cpio.gz" -nt "$here/guest/init" ] \
    && [ "$d/initrd.cpio.gz" -nt "$here/setup.sh" ]
}

need_tools() {
  local pk=()
  command -v qemu-system-x86_64 >/dev/null || pk+=(qemu-system-x86)
  command -v zstd >/dev/null || pk+=(zstd)
  if [ ${#pk[@]} -gt 0 ]; then
    echo "setup: installing ${pk[*]} (--no-install-recommends)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pk[@]}" >/dev/null
  fi
}

# Modules in load order; a name absent from the package is built in or merged into another module
# (see above). The REQUIRED ones must be modules in every kernel of the matrix. uio and
# uio_pci_generic: DPDK's uio path (phase-dpdk.ts); both are modules in 6.1 and 7.x.
MODS_ALL="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
          netfs fscache 9pnet 9pnet_virtio 9p
          irqbypass vfio vfio_virqfd vfio_iommu_type1 vfio-pci-core vfio-pci
          uio uio_pci_generic"
REQUIRED="9pnet 9pnet_virtio 9p vfio vfio_iommu_type1 vfio-pci-core vfio-pci uio uio_pci_generic"

build_entry() {  # $1 entry, $2 kernel package, $3 apt command prefix (for downloads)
  local name=$1 KPKG=$2 APT=$3 d="$B/$1" KVER=${2#linux-image-} t0=$SECONDS
  echo "setup: $name: $KPKG"
  mkdir -p "$B/debs/$name"; cd "$B/debs/$name"
  # The image package; on 7.x it only depends on linux-binary-<ver> + linux-modules-<ver>.
  local pkgs=("$KPKG") extra
  extra=$($APT_CACHE depends "$KPKG" 2>/dev/null | sed -n 's/^ *Depends: \(linux-\(binary\|modules\)-.*\)$/\1/p' \
          | grep -Fx -e "linux-binary-$KVER" -e "linux-modules-$KVER" || true)
  for p in $extra; do pkgs+=("$p"); done
  for p in "${pkgs[@]}"; do
    ls "${p}"_*.deb >/dev/null 2>&1 && continue
    # apt-get download runs as _apt where it can; in a root-only dir it warns and goes on as root.
    $APT download -qq "$p" 2>&1 | grep -v 'unsandboxed' || true
    ls "${p}"_*.deb >/dev/null 2>&1 || { echo "setup: $name: could not download $p" >&2; return 1; }
  done
  cd "$B/debs"
  ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download -qq busybox-static 2>&1 | grep -v 'unsandboxed' || true
  local BDEB; BDEB=$(ls "$B"/debs/busybox-static_*.deb | head -1)
  rm -rf "$d.x" "$d.initrd"; mkdir -p "$d.x" "$d.initrd/bin" "$d.initrd/lib/modules" "$d"
  # extract only the kernel and the module directories needed (not the whole 400 MB tree); each
  # package holds only some of the patterns, so tar's "not found" is expected
  local deb pat=()
  for base in ./lib/modules ./usr/lib/modules; do
    K=$base/$KVER/kernel
    pat+=("$base/$KVER/vmlinuz" "$K/drivers/virtio/*" "$K/net/9p/*" "$K/fs/9p/*" "$K/fs/netfs/*" "$K/fs/fscache/*"
          "$K/drivers/vfio/*" "$K/virt/lib/*" "$K/drivers/uio/uio.ko*" "$K/drivers/uio/uio_pci_generic.ko*")
  done
  pat+=("./boot/vmlinuz-$KVER")
  for p in "${pkgs[@]}"; do
    deb=$(ls "$B/debs/$name/${p}"_*.deb | head -1)
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$d.x" --wildcards "${pat[@]}" 2>/dev/null || true
  done
  dpkg-deb --fsys-tarfile "$BDEB" | tar -x -C "$d.x" ./bin/busybox
  local vmlinuz; vmlinuz=$(find "$d.x" -path "*/boot/vmlinuz-$KVER" -o -path "*/modules/$KVER/vmlinuz" | head -1)
  [ -n "$vmlinuz" ] || { echo "setup: $name: no vmlinuz in ${pkgs[*]}" >&2; return 1; }
  local loaded="" builtin=""
  for m in $MODS_ALL; do
    f=$(find "$d.x" -path "*/modules/$KVER/*" \( -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" \) | head -1)
    if [ -z "$f" ]; then
      case " $REQUIRED " in *" $m "*) echo "setup: $name: required module $m not found in ${pkgs[*]}" >&2; return 1;; esac
      builtin="$builtin $m"; continue
    fi
    case "$f" in
      *.xz)  python3 -c 'import lzma,sys; open(sys.argv[2],"wb").write(lzma.open(sys.argv[1]).read())' "$f" "$d.initrd/lib/modules/$m.ko";;
      *.zst) zstd -q -d -c "$f" > "$d.initrd/lib/modules/$m.ko";;
      *)     cp "$f" "$d.initrd/lib/modules/";;
    esac
    loaded="$loaded $m"
  done
  cp "$d.x/bin/busybox" "$d.initrd/bin/busybox"
  cp "$here/guest/init" "$d.initrd/init"; chmod 755 "$d.initrd/init"
  echo $loaded > "$d.initrd/modules.order"
  (cd "$d.initrd" && find . | "$d.x/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$d/initrd.cpio.gz")
  cp "$vmlinuz" "$d/vmlinuz"
  # The uncompressed ELF vmlinux (~66 MB): QEMU boots it through its PVH entry point, skipping
  # SeaBIOS real mode and the in-guest decompression (~2.3 s under TCG). 6.1 is xz, 7.x zstd.
  python3 - "$d/vmlinuz" "$d/vmlinux" <<'PY'
import lzma, subprocess, sys
data = open(sys.argv[1], "rb").read()
xz, zs = data.find(b"\xfd7zXZ\x00"), data.find(b"\x28\xb5\x2f\xfd")
if xz >= 0:
    out = lzma.LZMADecompressor().decompress(data[xz:])
elif zs >= 0:
    # zstd stops at the end of its frame and complains about the kernel's trailing size word
    out = subprocess.run(["zstd", "-q", "-d", "-c"], input=data[zs:], capture_output=True).stdout
else:
    sys.exit("setup: no xz or zstd payload in vmlinuz")
if out[:4] != b"\x7fELF":
    sys.exit("setup: decompressed vmlinuz is not an ELF file")
open(sys.argv[2], "wb").write(out)
PY
  echo "$KVER" > "$d/kver"
  echo "$loaded" > "$d/modules"; echo "$builtin" > "$d/builtin"
  rm -rf "$d.x" "$d.initrd"
  echo "setup: $name: kernel $KVER, initrd $(du -k "$d/initrd.cpio.gz" | cut -f1) KiB, modules:$loaded; built in or merged:${builtin:- none}; in $((SECONDS-t0)) s"
}

rc=0
for e in $ENTRIES; do
  d="$B/$e"
  case "$e" in
    deb12)
      if [ "${VMTEST_REFRESH:-0}" != 1 ] && command -v qemu-system-x86_64 >/dev/null && command -v zstd >/dev/null && fresh "$d" \
         && { [ -z "${VMTEST_KERNEL_PKG:-}" ] || [ "$(cat "$d/kver")" = "${VMTEST_KERNEL_PKG#linux-image-}" ]; }; then
        echo "setup: deb12: up to date ($(cat "$d/kver"))"; continue
      fi
      # Old package lists can name a kernel that the security archive no longer serves: refresh.
      apt-get update -qq
      need_tools
      APT_CACHE="apt-cache"
      KPKG=${VMTEST_KERNEL_PKG:-$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1)}
      [ -n "$KPKG" ] || { echo "setup: deb12: cannot resolve linux-image-amd64" >&2; rc=1; continue; }
      build_entry deb12 "$KPKG" "apt-get" || rc=1
      ;;
    7x)
      if [ "${VMTEST_REFRESH:-0}" != 1 ] && command -v qemu-system-x86_64 >/dev/null && command -v zstd >/dev/null && fresh "$d" \
         && { [ -z "${VMTEST_KERNEL7_PKG:-}" ] || [ "$(cat "$d/kver")" = "${VMTEST_KERNEL7_PKG#linux-image-}" ]; }; then
        echo "setup: 7x: up to date ($(cat "$d/kver"))"; continue
      fi
      need_tools
      A="$B/apt7x"; mkdir -p "$A/lists/partial" "$A/cache/archives/partial"
      cat > "$A/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
EOF
      O="-o Dir::Etc::SourceList=$A/sources.list -o Dir::Etc::SourceParts=/dev/null -o Dir::State::Lists=$A/lists -o Dir::Cache=$A/cache"
      if ! apt-get $O update -qq 2>"$A/update.err"; then
        echo "setup: 7x: apt-get update with the trixie-backports/sid source list failed: $(tail -3 "$A/update.err" | tr '\n' ' ')" >&2
        rc=1; continue
      fi
      APT_CACHE="apt-cache $O"
      KPKG=${VMTEST_KERNEL7_PKG:-$(apt-cache $O pkgnames linux-image-7 | grep -E '^linux-image-7\.[0-9]+\.[0-9]+\+deb[0-9]+-amd64$' | sort -V | tail -1)}
      [ -n "$KPKG" ] || { echo "setup: 7x: no linux-image-7.*-amd64 in trixie-backports or sid" >&2; rc=1; continue; }
      build_entry 7x "$KPKG" "apt-get $O" || rc=1
      ;;
    *) echo "setup: unknown matrix entry '$e' (deb12, 7x)" >&2; rc=1;;
  esac
done
exit $rc
