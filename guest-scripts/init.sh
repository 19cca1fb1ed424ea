#!/usr/lib/banger/bin/sh
# banger's init (/usr/lib/banger/init), recorded at pull time for images whose /sbin/init is
# not systemd. Mounts what a system needs, applies the network and hostname, starts the SSH
# server (the image's sshd when it has one, else banger's dropbear), then hands PID 1 to the
# image's own /sbin/init when there is one. Without one it stays PID 1: it reaps orphans, keeps
# the SSH server running and powers off on busybox's poweroff, halt and reboot (USR2, USR1, TERM).
PATH=/usr/lib/banger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
say() { echo "banger-init: $*" > /dev/console 2>/dev/null; }
mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }

mkdir -p /proc /sys /dev /run /tmp /root
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mounted /dev/shm || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mounted /run || mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
chmod 1777 /tmp
# /etc/fstab holds banger's work disk line (/dev/vdb on /root); the image's own lines may fail.
mount -a 2>/dev/null
/usr/lib/banger/network-setup
/usr/lib/banger/first-boot

if [ -x /sbin/init ] && [ "$(readlink -f /sbin/init)" != /usr/lib/banger/init ]; then
  /usr/lib/banger/ssh-server &
  exec /sbin/init
fi

down() {
  say "powering off"
  kill -TERM -1 2>/dev/null
  sleep 1
  kill -KILL -1 2>/dev/null
  sync
  umount -a -r 2>/dev/null
  sync
  poweroff -f
}
trap down USR1 USR2 TERM INT

while :; do
  /usr/lib/banger/ssh-server &
  server=$!
  # wait returns when the server exits or a trapped signal arrives, reaping adopted orphans
  # on the way (ash's wait takes whatever child exits).
  while kill -0 "$server" 2>/dev/null; do wait "$server"; done
  say "the SSH server exited; starting it again in 1 s"
  sleep 1
done
