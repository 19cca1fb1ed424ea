#!/usr/lib/banger/bin/sh
# banger first boot: fresh SSH host keys for this VM, for the image's sshd or banger's dropbear.
# Nothing is installed: the SSH server banger brings (/usr/lib/banger/ssh-server) needs no network.
PATH=/usr/lib/banger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
marker=/var/lib/banger/first-boot-done
[ -e "$marker" ] && exit 0
say() { echo "banger-first-boot: $*"; echo "banger-first-boot: $*" > /dev/console 2>/dev/null; }
mkdir -p /var/lib/banger

# ed25519 only: RSA generation takes tens of seconds under software emulation.
if [ -x /usr/sbin/sshd ]; then
  rm -f /etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key || { say "error: ssh-keygen failed"; exit 1; }
  mkdir -p /run/sshd
else
  key=/var/lib/banger/dropbear_ed25519_host_key
  rm -f "$key"
  LD_LIBRARY_PATH=/usr/lib/banger/lib /usr/lib/banger/bin/dropbearkey -t ed25519 -f "$key" >/dev/null ||
    { say "error: dropbearkey failed"; exit 1; }
fi
# The keys reach the disk before the marker does: a VM killed seconds after its first boot
# (ext4 commits the empty marker before it writes the keys' delayed blocks) kept the marker
# and empty keys, and sshd never started again.
sync
touch "$marker"
sync
exit 0
