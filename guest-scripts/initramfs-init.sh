#!/bin/busybox sh
# banger initramfs: loads virtio modules, mounts the root disk, switch_root.
/bin/busybox mkdir -p /proc /sys /dev /newroot /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mdev -s

fail() {
  echo "banger-initramfs: error: $*" > /dev/console
  echo "banger-initramfs: powering off (see 'banger vm logs' for this console)" > /dev/console
  sleep 1
  poweroff -f
}

# The modules to load, dependencies first, one per line: banger writes the list beside them.
while IFS= read -r m; do
  [ -n "$m" ] || continue
  insmod "/lib/modules/$m.ko" || fail "cannot load module $m"
done </lib/modules/load-order

root=""; rootfstype="ext4"; init="/sbin/init"; rootwait=30; mode="rw"
# shellcheck disable=SC2013 # the command line is one line of words, split on purpose
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root="${arg#root=}" ;;
    rootfstype=*) rootfstype="${arg#rootfstype=}" ;;
    banger.init=*) init="${arg#banger.init=}" ;;
    banger.rootwait=*) rootwait="${arg#banger.rootwait=}" ;;
    ro) mode="ro" ;;
    rw) mode="rw" ;;
  esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"

# Wait, bounded, for the root device to appear.
dev=""
i=0
while [ "$i" -lt $((rootwait * 10)) ]; do
  case "$root" in
    UUID=*|LABEL=*) dev="$(findfs "$root" 2>/dev/null)" ;;
    *) [ -b "$root" ] && dev="$root" ;;
  esac
  [ -n "$dev" ] && break
  sleep 0.1
  i=$((i + 1))
done
[ -n "$dev" ] || fail "root device $root did not appear within ${rootwait}s"

mount -t "$rootfstype" -o "$mode" "$dev" /newroot || fail "cannot mount $dev ($rootfstype) on /newroot"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$init not found on the root filesystem"

umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot "$init"
