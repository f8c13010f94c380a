#!/bin/sh
# umldbg boot stub: the kernel runs this as init (init=/usr/local/sbin/umldbg-boot).
#
# It reads the kernel command line (/proc/cmdline):
#   umldbg.host=DIR    mount the host's directory DIR over hostfs at the same path in the guest
#                      (may be given more than once; DIR holds no spaces)
#   umldbg.hostrw=1    mount those directories read-write (default: read-only)
#   umldbg.init=PATH   the program to exec as init once they are mounted (a script that is not
#                      executable runs with /bin/sh)
# and then leaves the machine as the kernel left it (proc unmounted again), so an init written
# for a guest booted straight from the kernel runs here unchanged.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
hosts=
init=
mode=ro
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    umldbg.host=*) hosts="$hosts ${arg#umldbg.host=}" ;;
    umldbg.init=*) init=${arg#umldbg.init=} ;;
    umldbg.hostrw=1) mode=rw ;;
  esac
done
for dir in $hosts; do
  mkdir -p "$dir" && mount -t hostfs -o "$mode,$dir" none "$dir" ||
    echo "umldbg-boot: cannot mount the host's $dir" >&2
done
umount /proc
if [ -n "$init" ] && [ -f "$init" ]; then
  [ -x "$init" ] && exec "$init"
  exec /bin/sh "$init"
fi
echo "umldbg-boot: no umldbg.init= on the kernel command line, or ${init:-it} is missing: a shell on the console" >&2
exec /bin/sh
