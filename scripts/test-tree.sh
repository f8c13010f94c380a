#!/usr/bin/env bash
# The kernel tree the kernel-loop test (tests/kernel_loop.rs) and scripts/bench-loop.sh edit and
# build with `umldbg kernel build --source`: Debian's linux-source tarball unpacked (never built in
# place) under the cache, with umldbg's patches applied (also those added later). Prints the
# tree's path. Callers that edit or build the tree hold `flock <cache>/test-tree.lock`.
#
# usage: scripts/test-tree.sh [--build]
#   --build   also build it (`umldbg kernel build --source TREE`), holding the tree's lock: the
#             first time a full build (4 to 40 minutes on 2 cores, depending on load), later an
#             incremental one or a cache answer. Without --build the caller holds the lock.
#
# Idempotent: a tree that is there is reused; it is unpacked into a temporary directory and
# renamed, so an interrupted run leaves no half tree behind.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cache="${UMLDBG_CACHE:-$HOME/.cache/umldbg}"
tree="$cache/test-tree"

if [ ! -f "$tree/Makefile" ]; then
  deb="$(ls -t "$cache"/downloads/linux-source-*_all.deb /var/cache/apt/archives/linux-source-*_all.deb 2>/dev/null | head -n1 || true)"
  if [ -z "$deb" ]; then
    echo "test-tree: no linux-source-X.Y .deb in $cache/downloads: run \`umldbg kernel build\` (scripts/setup.sh) first" >&2
    exit 1
  fi
  ver="$(dpkg-deb -f "$deb" Package | sed 's/^linux-source-//')"
  tmp="$tree.tmp.$$"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  echo "test-tree: unpacking linux-source-$ver from $deb" >&2
  dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/linux-source-$ver.tar.xz" \
    | tar -xJ -C "$tmp" --strip-components=1
  rm -rf "$tree"
  mv "$tmp" "$tree"
fi

# umldbg's patches, those not in yet (a patch added since the tree was unpacked goes in now).
for p in "$root"/scripts/kernel-patches/*.patch; do
  if patch -d "$tree" -p1 --batch --silent --forward --dry-run < "$p" >/dev/null 2>&1; then
    echo "test-tree: applying $(basename "$p")" >&2
    patch -d "$tree" -p1 --batch --silent --forward < "$p"
  fi
done

if [ "${1:-}" = "--build" ]; then
  exec 9>"$cache/test-tree.lock"
  flock 9
  bin="${UMLDBG:-$root/target/release/umldbg}"
  "$bin" --cache "$cache" kernel build --source "$tree" >&2
fi
echo "$tree"
