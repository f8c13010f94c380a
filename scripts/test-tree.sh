#!/usr/bin/env bash
# The kernel tree the kernel-loop test (tests/kernel_loop.rs) and scripts/bench-loop.sh edit and
# build with `umldbg kernel build --source`: Debian's linux-source tarball unpacked (never built in
# place) under the cache, with umldbg's patches applied. Prints the tree's path.
#
# usage: scripts/test-tree.sh [--build]
#   --build   also build it (`umldbg kernel build --source TREE`): the first time a full build
#             (4 to 15 minutes on 2 cores), later an incremental one or a cache answer.
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
  for p in "$root"/scripts/kernel-patches/*.patch; do
    patch -d "$tmp" -p1 --batch --silent --forward < "$p"
  done
  rm -rf "$tree"
  mv "$tmp" "$tree"
fi

if [ "${1:-}" = "--build" ]; then
  bin="${UMLDBG:-$root/target/release/umldbg}"
  "$bin" --cache "$cache" kernel build --source "$tree" >&2
fi
echo "$tree"
