#!/usr/bin/env bash
# Prepare this machine for umldbg: host packages (idempotent), the umldbg binary, the UML kernel;
# with --tests also the kernel tree the tests build (scripts/test-tree.sh).
# Safe to run again: installed packages and a valid cached kernel are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (sudo $0): it installs packages and labs need network namespaces" >&2
  exit 1
fi

packages=(
  # debugging and the article's tools, used on the host and (through the hostfs root) in guests
  gdb iptables kmod iproute2 iputils-ping traceroute tcpdump python3 procps
  # the sandbox every lab machine runs in (bwrap; setpriv comes with util-linux)
  bubblewrap
  # LLDB as a client of `umldbg serve` (tests/serve_lldb.rs)
  lldb
  # the kernel build
  build-essential flex bison bc libelf-dev xz-utils dpkg-dev patch
  # benchmarks compare with pahole
  dwarves
  # root filesystem images for lab machines (umldbg image build)
  mmdebstrap e2fsprogs
  # trace's packet filters are compiled by libpcap (the pcap crate links it)
  libpcap-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cargo build --release --locked
./target/release/umldbg kernel build

# `--tests`: also the kernel tree that the kernel-loop test edits and rebuilds
# (tests/kernel_loop.rs): unpacked once and built once with make O= (a full build, 4 to 40
# minutes on 2 cores depending on load); later runs find it built and rebuild only what changed.
if [ "${1:-}" = "--tests" ]; then
  UMLDBG=./target/release/umldbg scripts/test-tree.sh --build >/dev/null
fi
