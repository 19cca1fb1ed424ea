#!/usr/lib/banger/bin/sh
# banger: apply banger.ip=, banger.gw=, banger.dns=, banger.hostname= and banger.mac= from its
# arguments, or from the kernel command line when it has none (a cold boot, which never names a
# MAC: the VMM gives the device its own). The identity reader (identity.sh) runs it with the words
# of a VM restored from a snapshot, whose device still has the saved VM's MAC and address.
# banger's busybox runs it, with busybox's ip and hostname: the image may have neither.
# Exits 1 when the MAC, address or route could not be set.
PATH=/usr/lib/banger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
ip=""; gw=""; dns=""; name=""; mac=""
if [ "$#" -eq 0 ]; then
  set -f
  # shellcheck disable=SC2046 # the command line is one line of words, split on purpose
  set -- $(cat /proc/cmdline)
  set +f
fi
for arg; do
  case "$arg" in
    banger.ip=*) ip="${arg#banger.ip=}" ;;
    banger.gw=*) gw="${arg#banger.gw=}" ;;
    banger.dns=*) dns="${arg#banger.dns=}" ;;
    banger.hostname=*) name="${arg#banger.hostname=}" ;;
    banger.mac=*) mac="${arg#banger.mac=}" ;;
  esac
done
status=0
if [ -n "$name" ]; then
  echo "$name" > /etc/hostname
  hostname "$name" 2>/dev/null || echo "$name" > /proc/sys/kernel/hostname
fi
ip link set lo up 2>/dev/null
dev=""
for d in /sys/class/net/*; do
  n="${d##*/}"
  [ "$n" = lo ] && continue
  dev="$n"; break
done
# The MAC before the address: the address is announced from the new one.
if [ -n "$dev" ] && [ -n "$mac" ]; then
  ip link set dev "$dev" address "$mac" || status=1
fi
if [ -n "$dev" ] && [ -n "$ip" ]; then
  ip link set "$dev" up || status=1
  ip addr flush dev "$dev" 2>/dev/null
  ip addr add "$ip" dev "$dev" || status=1
  if [ -n "$gw" ]; then ip route replace default via "$gw" dev "$dev" || status=1; fi
fi
if [ -n "$dns" ]; then
  rm -f /etc/resolv.conf
  printf 'nameserver %s\nsearch vm\n' "$dns" > /etc/resolv.conf
fi
exit "$status"
