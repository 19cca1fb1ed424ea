#!/usr/lib/banger/bin/sh
# banger first boot: fresh SSH host keys for this VM, for the image's sshd or banger's dropbear.
# Nothing is installed: the SSH server banger brings (/usr/lib/banger/ssh-server) needs no network.
# `first-boot renew` makes them again in a VM that has them: the identity reader (identity.sh)
# runs it in a VM restored from a snapshot, whose keys the snapshot's other clones have too. The
# new key is made beside the old one and renamed over it, so a server never finds none.
PATH=/usr/lib/banger/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
marker=/var/lib/banger/first-boot-done
mode=${1:-}
# A clone that banger booted cold instead of restoring (banger.renew=1 on its command line) has
# its snapshot's keys, which the snapshot's other clones have too.
case " $(cat /proc/cmdline 2>/dev/null) " in *" banger.renew=1 "*) mode=renew ;; esac
[ "$mode" != renew ] && [ -e "$marker" ] && exit 0
say() { echo "banger-first-boot: $*"; echo "banger-first-boot: $*" > /dev/console 2>/dev/null; }
mkdir -p /var/lib/banger

# ed25519 only: RSA generation takes tens of seconds under software emulation.
if [ -x /usr/sbin/sshd ]; then
  key=/etc/ssh/ssh_host_ed25519_key
  rm -f "$key.new" "$key.new.pub"
  ssh-keygen -q -t ed25519 -N "" -f "$key.new" || { say "error: ssh-keygen failed"; exit 1; }
  # Every other host key the image brought would be every VM's.
  for f in /etc/ssh/ssh_host_*; do
    case "$f" in
      "$key" | "$key.pub" | "$key.new" | "$key.new.pub") ;;
      *) rm -f "$f" ;;
    esac
  done
  if ! mv -f "$key.new.pub" "$key.pub" || ! mv -f "$key.new" "$key"; then
    say "error: cannot install the new host key"
    exit 1
  fi
  mkdir -p /run/sshd
else
  key=/var/lib/banger/dropbear_ed25519_host_key
  rm -f "$key.new"
  LD_LIBRARY_PATH=/usr/lib/banger/lib /usr/lib/banger/bin/dropbearkey -t ed25519 -f "$key.new" >/dev/null ||
    { say "error: dropbearkey failed"; exit 1; }
  mv -f "$key.new" "$key" || { say "error: cannot install the new host key"; exit 1; }
fi
# The keys reach the disk before the marker does: a VM killed seconds after its first boot
# (ext4 commits the empty marker before it writes the keys' delayed blocks) kept the marker
# and empty keys, and sshd never started again.
sync
touch "$marker"
sync
exit 0
