#!/bin/sh
# service for umldbg images, which have no systemd: `service NAME VERB` runs NAME's init script
# (see /usr/local/lib/umldbg/service-map.sh).
. /usr/local/lib/umldbg/service-map.sh
if [ "$1" = --status-all ]; then
  for s in /etc/init.d/*; do
    [ -x "$s" ] || continue
    if "$s" status >/dev/null 2>&1; then echo " [ + ]  ${s##*/}"; else echo " [ - ]  ${s##*/}"; fi
  done
  exit 0
fi
if [ $# -lt 2 ]; then
  echo "usage: service NAME start|stop|restart|reload|status" >&2
  exit 1
fi
name=$1
shift
if ! s=$(umldbg_script "$name"); then
  echo "service (umldbg image): no init script for $name in this image" >&2
  exit 1
fi
exec "$s" "$@"
