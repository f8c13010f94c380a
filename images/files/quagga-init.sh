#!/bin/sh
# Quagga for umldbg images: Debian 12 has no Quagga, so Quagga's per-daemon configuration
# (/etc/quagga, or Netkit's /etc/zebra: daemons, zebra.conf, bgpd.conf, ospfd.conf, ripd.conf, ...)
# is handed to FRR, which descends from Quagga and reads the same files, and FRR is started.
# Two defaults of FRR that Quagga did not have are turned off for BGP, so Quagga labs behave as
# they did: routes from eBGP peers need no policy, and `network` needs no matching route.
### BEGIN INIT INFO
# Provides: quagga zebra
# Required-Start: $local_fs $network
# Required-Stop: $local_fs $network
# Default-Start: 2 3 4 5
# Default-Stop: 0 1 6
# Short-Description: Quagga's configuration run by FRR
### END INIT INFO
src=
for d in /etc/quagga /etc/zebra; do
  if [ -f "$d/daemons" ] || ls "$d"/*.conf >/dev/null 2>&1; then
    src=$d
    break
  fi
done
convert() {
  mkdir -p /etc/frr /var/log/quagga /var/log/zebra /var/run/quagga
  chown frr:frr /var/log/quagga /var/log/zebra /var/run/quagga
  rm -f /etc/frr/frr.conf
  echo 'no service integrated-vtysh-config' > /etc/frr/vtysh.conf
  for f in "$src"/*.conf; do
    [ -f "$f" ] || continue
    name=${f##*/}
    case "$name" in vtysh.conf | daemons.conf) continue ;; esac
    if [ "$name" = bgpd.conf ]; then
      awk '{ print } /^[ \t]*router[ \t]+bgp/ { print " no bgp ebgp-requires-policy"; print " no bgp network import-check" }' "$f" > "/etc/frr/$name"
    else
      cp "$f" "/etc/frr/$name"
    fi
  done
  if [ -f "$src/daemons" ]; then
    sed -n 's/^[ \t]*\([a-z0-9]*d\)[ \t]*=[ \t]*\(yes\|no\).*/\1 \2/p' "$src/daemons" |
      while read -r daemon on; do
        [ "$daemon" = zebra ] && continue
        if grep -q "^$daemon=" /etc/frr/daemons; then
          sed -i "s/^$daemon=.*/$daemon=$on/" /etc/frr/daemons
        fi
      done
  fi
  chown -R frr:frr /etc/frr
}
case "$1" in
  start | restart | reload | force-reload)
    [ -n "$src" ] && convert
    exec /etc/init.d/frr "$1"
    ;;
  stop | status)
    exec /etc/init.d/frr "$1"
    ;;
  *)
    echo "usage: $0 start|stop|restart|reload|status" >&2
    exit 1
    ;;
esac
