# Sourced by systemctl and service in umldbg images (no systemd): which script runs a service.
# umldbg_script UNIT prints the script for UNIT (name or name.service) and fails when none is there.
umldbg_script() {
  n=${1%.service}
  case "$n" in
    bind | bind9 | named) candidates="named bind9 bind" ;;
    apache | apache2 | httpd) candidates="apache2" ;;
    quagga | zebra) candidates="quagga zebra" ;;
    *) candidates=$n ;;
  esac
  for c in $candidates; do
    if [ -x "/etc/init.d/$c" ]; then
      echo "/etc/init.d/$c"
      return 0
    fi
  done
  # A daemon's own start script where it has no init.d one (FRR's frrinit.sh).
  if [ -x "/usr/lib/$n/${n}init.sh" ]; then
    echo "/usr/lib/$n/${n}init.sh"
    return 0
  fi
  return 1
}
