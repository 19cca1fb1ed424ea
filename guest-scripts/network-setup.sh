#!/usr/lib/banger/bin/sh
# banger: apply banger.ip=, banger.gw=, banger.dns=, banger.hostname= from the kernel command line.
# banger's busybox runs it, with busybox's ip and hostname: the image may have neither.
PATH=/usr/lib/banger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
ip=""; gw=""; dns=""; name=""
# shellcheck disable=SC2013 # the command line is one line of words, split on purpose
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    banger.ip=*) ip="${arg#banger.ip=}" ;;
    banger.gw=*) gw="${arg#banger.gw=}" ;;
    banger.dns=*) dns="${arg#banger.dns=}" ;;
    banger.hostname=*) name="${arg#banger.hostname=}" ;;
  esac
done
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
if [ -n "$dev" ] && [ -n "$ip" ]; then
  ip link set "$dev" up
  ip addr flush dev "$dev" 2>/dev/null
  ip addr add "$ip" dev "$dev"
  [ -n "$gw" ] && ip route replace default via "$gw" dev "$dev"
fi
if [ -n "$dns" ]; then
  rm -f /etc/resolv.conf
  printf 'nameserver %s\nsearch vm\n' "$dns" > /etc/resolv.conf
fi
exit 0
