#!/bin/sh
# banger first boot: fresh SSH host keys for this VM, and sshd when the image lacks it.
marker=/var/lib/banger/first-boot-done
[ -e "$marker" ] && exit 0
say() { echo "banger-first-boot: $*"; echo "banger-first-boot: $*" > /dev/console 2>/dev/null; }

if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
  # shellcheck source=/dev/null # the image's own file, read for ID and ID_LIKE
  . /etc/os-release 2>/dev/null
  family=""
  for id in $ID $ID_LIKE; do
    case "$id" in
      debian|ubuntu) family=apt ;;
      alpine) family=apk ;;
      fedora|rhel|centos|rocky|almalinux) family=dnf ;;
      arch|archlinux) family=pacman ;;
      opensuse*|suse|sles) family=zypper ;;
    esac
    [ -n "$family" ] && break
  done
  say "sshd is missing: installing it with $family"
  case "$family" in
    apt) DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server ;;
    apk) apk add --no-cache openssh ;;
    dnf) (dnf install -y openssh-server || yum install -y openssh-server) ;;
    pacman) pacman -Sy --noconfirm openssh ;;
    zypper) zypper --non-interactive install openssh ;;
    *) say "error: cannot install sshd on this distribution (ID=$ID ID_LIKE=$ID_LIKE); use an image with openssh-server"; exit 1 ;;
  esac || { say "error: installing sshd failed (does the VM have network access? try --nat)"; exit 1; }
  if command -v systemctl >/dev/null 2>&1; then
    systemctl enable ssh.service 2>/dev/null || systemctl enable sshd.service 2>/dev/null
  fi
fi

# ed25519 only: RSA generation takes tens of seconds under software emulation.
rm -f /etc/ssh/ssh_host_*
ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key || { say "error: ssh-keygen failed"; exit 1; }
mkdir -p /var/lib/banger /run/sshd
# The keys reach the disk before the marker does: a VM killed seconds after its first boot
# (ext4 commits the empty marker before it writes the keys' delayed blocks) kept the marker
# and empty keys, and sshd never started again.
sync
touch "$marker"
sync
exit 0
