#!/usr/bin/env bash
# Build the kmod test fixtures into fixtures/kmod/:
#
#   umldbg_test.ko          a real module (fixtures/kmod/src/module) built against the UML kernel tree
#   umldbg_test.nodebug.ko  the same without DWARF (strip --strip-debug)
#   umldbg_test.nosymtab.ko the same without .symtab (section type patched to SHT_NULL)
#   truncated-*.ko          the module cut short: inside the ELF header, inside the sections,
#                           before the section header table
#   badshoff.ko             e_shoff pointing past the end of the file
#   badsection.ko           one section header's sh_offset pointing past the end of the file
#   baddwarf.ko             .debug_info overwritten with garbage (structure fine, DWARF not)
#   notelf.txt              a text file
#   i386.o                  a 32-bit i386 relocatable (objcopy -O elf32-i386)
#   layouts.elf             fixtures/kmod/src/layouts.c linked (an executable: not relocatable;
#                           also the DWARF fixture for ptype)
#   layouts.o               the same compiled only (relocatable, but not a module)
#
# usage: scripts/build-test-module.sh [BUILD_DIR]
#   BUILD_DIR: a configured and built UML kernel tree; default: build_dir of the newest
#   kernel in the umldbg cache (`umldbg kernel build` makes one).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/fixtures/kmod"
src="$root/fixtures/kmod/src"

build_dir="${1:-}"
if [ -z "$build_dir" ]; then
    cache="${UMLDBG_CACHE:-$HOME/.cache/umldbg}"
    manifest="$(ls -t "$cache"/kernels/*/manifest.json 2>/dev/null | head -n1 || true)"
    if [ -z "$manifest" ]; then
        echo "no kernel build tree: run \`umldbg kernel build\` or pass BUILD_DIR" >&2
        exit 1
    fi
    build_dir="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["build_dir"])' "$manifest")"
fi
[ -f "$build_dir/Module.symvers" ] || { echo "$build_dir is not a built kernel tree (no Module.symvers)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The module, built out of tree exactly as the article builds its own.
cp "$src/module/umldbg_test.c" "$src/module/Kbuild" "$work/"
# The prefix maps keep this machine's paths out of the committed DWARF.
make -s -C "$build_dir" M="$work" ARCH=um \
    KCFLAGS="-ffile-prefix-map=$build_dir=/kernel -ffile-prefix-map=$work=/module" \
    modules >"$work/make.log" 2>&1 || { cat "$work/make.log" >&2; exit 1; }
ko="$out/umldbg_test.ko"
cp "$work/umldbg_test.ko" "$ko"

strip --strip-debug -o "$out/umldbg_test.nodebug.ko" "$ko"

# Patch bytes with python: exact offsets are easier to get right there than with dd.
python3 - "$out" <<'PY'
import struct, sys, os
out = sys.argv[1]
data = open(os.path.join(out, "umldbg_test.ko"), "rb").read()

shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3a)

def shdr(i):
    return shoff + i * shentsize

def names():
    str_off, = struct.unpack_from("<Q", data, shdr(shstrndx) + 0x18)
    res = {}
    for i in range(shnum):
        name_off, = struct.unpack_from("<I", data, shdr(i))
        end = data.index(b"\0", str_off + name_off)
        res[data[str_off + name_off:end].decode()] = i
    return res

sec = names()

def write(name, blob):
    open(os.path.join(out, name), "wb").write(blob)

# No .symtab: turn its header into SHT_NULL, the way a broken strip would leave it.
b = bytearray(data)
struct.pack_into("<I", b, shdr(sec[".symtab"]) + 4, 0)
write("umldbg_test.nosymtab.ko", b)

write("truncated-header.ko", data[:40])
write("truncated-middle.ko", data[: len(data) // 2])
write("truncated-shdrs.ko", data[: shoff + shentsize * 3])

b = bytearray(data)
struct.pack_into("<Q", b, 0x28, len(data) + 4096)
write("badshoff.ko", b)

b = bytearray(data)
struct.pack_into("<Q", b, shdr(sec[".modinfo"]) + 0x18, len(data) + 100)
write("badsection.ko", b)

b = bytearray(data)
off, size = struct.unpack_from("<QQ", b, shdr(sec[".debug_info"]) + 0x18)
for k in range(off + 11, off + min(size, 4096)):
    b[k] = (k * 197 + 89) & 0xFF
write("baddwarf.ko", b)
PY

printf 'this is not an ELF file\n' >"$out/notelf.txt"

gcc -g -O0 -ffile-prefix-map="$root"=. -c -o "$out/layouts.o" "$src/layouts.c"
gcc -g -O0 -ffile-prefix-map="$root"=. -nostdlib -static -Wl,--build-id -o "$out/layouts.elf" "$src/layouts.c"
# A 32-bit module look-alike (the article's i386 build): .modinfo and a this_module section.
cat >"$work/i386.c" <<'C'
__attribute__((section(".modinfo"), used)) static const char license[] = "license=GPL";
__attribute__((section(".gnu.linkonce.this_module"))) char this_module[64] = "i386mod";
int i386mod_func(int x) { return x + 1; }
C
if ! gcc -m32 -O0 -c -o "$out/i386.o" "$work/i386.c" 2>/dev/null; then
    # Without 32-bit compiler support, convert a 64-bit object with no 64-bit relocations.
    gcc -O0 -c -o "$work/i386-64.o" "$work/i386.c"
    objcopy -I elf64-x86-64 -O elf32-i386 "$work/i386-64.o" "$out/i386.o"
fi

ls -l "$out" | sed 1d
