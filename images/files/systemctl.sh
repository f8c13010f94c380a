#!/bin/sh
# systemctl for umldbg images, which have no systemd: each unit maps to its init script
# (/etc/init.d/NAME, or the daemon's own start script); see /usr/local/lib/umldbg/service-map.sh.
. /usr/local/lib/umldbg/service-map.sh
verb=
units=
for a in "$@"; do
  case "$a" in
    -*) ;;
    *) if [ -z "$verb" ]; then verb=$a; else units="$units $a"; fi ;;
  esac
done
case "$verb" in
  enable | disable | mask | unmask | daemon-reload | daemon-reexec | preset | reset-failed) exit 0 ;;
  is-enabled) echo enabled; exit 0 ;;
  start | stop | restart | reload | force-reload | try-restart | reload-or-restart | status | is-active) ;;
  "") echo "systemctl (umldbg image, no systemd): give a verb and a unit, e.g. systemctl start frr" >&2; exit 1 ;;
  *) echo "systemctl (umldbg image, no systemd): '$verb' is not supported; use start, stop, restart, reload or status" >&2; exit 1 ;;
esac
rc=0
for u in $units; do
  if ! s=$(umldbg_script "$u"); then
    echo "systemctl (umldbg image): no init script for unit $u in this image" >&2
    [ "$verb" = is-active ] && echo inactive
    rc=5
    continue
  fi
  case "$verb" in
    try-restart | reload-or-restart) v=restart ;;
    is-active) v=status ;;
    *) v=$verb ;;
  esac
  if [ "$verb" = is-active ]; then
    if "$s" status >/dev/null 2>&1; then echo active; else echo inactive; rc=3; fi
  else
    "$s" "$v" || rc=$?
  fi
done
exit $rc
