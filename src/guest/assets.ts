import { S_IFDIR, S_IFLNK, S_IFREG } from "../image/oci/flatten.js";

/**
 * Files banger puts into every image so one read-only root serves every VM:
 * per-VM facts arrive on the kernel command line and are applied at boot.
 */
export interface GuestAsset {
  path: string;
  kind: "file" | "dir" | "symlink";
  mode: number;
  content?: string;
  target?: string;
}

/** Exactly these lines: a test pins the allow-list. */
export const SSHD_DROP_IN = [
  "PermitRootLogin prohibit-password",
  "PubkeyAuthentication yes",
  "PasswordAuthentication no",
  "KbdInteractiveAuthentication no",
  "AuthorizedKeysFile /root/.ssh/authorized_keys",
];

export const WORK_DISK_FSTAB_LINE = "/dev/vdb /root ext4 defaults,nofail 0 2";

const NETWORK_SCRIPT = `#!/bin/sh
# banger: apply banger.ip=, banger.gw=, banger.dns=, banger.hostname= from the kernel command line.
ip=""; gw=""; dns=""; name=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    banger.ip=*) ip="\${arg#banger.ip=}" ;;
    banger.gw=*) gw="\${arg#banger.gw=}" ;;
    banger.dns=*) dns="\${arg#banger.dns=}" ;;
    banger.hostname=*) name="\${arg#banger.hostname=}" ;;
  esac
done
if [ -n "$name" ]; then
  echo "$name" > /etc/hostname
  hostname "$name" 2>/dev/null || echo "$name" > /proc/sys/kernel/hostname
fi
ip link set lo up 2>/dev/null
dev=""
for d in /sys/class/net/*; do
  n="\${d##*/}"
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
  printf 'nameserver %s\\nsearch vm\\n' "$dns" > /etc/resolv.conf
fi
exit 0
`;

const FIRST_BOOT_SCRIPT = `#!/bin/sh
# banger first boot: fresh SSH host keys for this VM, and sshd when the image lacks it.
marker=/var/lib/banger/first-boot-done
[ -e "$marker" ] && exit 0
say() { echo "banger-first-boot: $*"; echo "banger-first-boot: $*" > /dev/console 2>/dev/null; }

if ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ]; then
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
`;

const NETWORK_UNIT = `[Unit]
Description=banger: network from the kernel command line
DefaultDependencies=no
After=systemd-udevd.service
Before=network.target network-pre.target ssh.service sshd.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/banger/network-setup

[Install]
WantedBy=multi-user.target
`;

const FIRST_BOOT_UNIT = `[Unit]
Description=banger: first boot (SSH host keys, sshd)
ConditionPathExists=!/var/lib/banger/first-boot-done
After=banger-network.service local-fs.target
Wants=banger-network.service
Before=ssh.service sshd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/lib/banger/first-boot
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
`;

/**
 * Init wrapper for images without systemd (booted with banger.init=/usr/lib/banger/init):
 * network and first boot, then the image's own init, or sshd when there is none.
 */
const INIT_WRAPPER = `#!/bin/sh
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -a 2>/dev/null
/usr/lib/banger/network-setup
/usr/lib/banger/first-boot
for init in /sbin/init /usr/sbin/init; do
  [ -x "$init" ] && exec "$init"
done
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
`;

export function guestAssets(): GuestAsset[] {
  const wants = "etc/systemd/system/multi-user.target.wants";
  return [
    { path: "usr/lib/banger", kind: "dir", mode: 0o755 },
    { path: "usr/lib/banger/network-setup", kind: "file", mode: 0o755, content: NETWORK_SCRIPT },
    { path: "usr/lib/banger/first-boot", kind: "file", mode: 0o755, content: FIRST_BOOT_SCRIPT },
    { path: "usr/lib/banger/init", kind: "file", mode: 0o755, content: INIT_WRAPPER },
    {
      path: "etc/systemd/system/banger-network.service",
      kind: "file",
      mode: 0o644,
      content: NETWORK_UNIT,
    },
    {
      path: "etc/systemd/system/banger-first-boot.service",
      kind: "file",
      mode: 0o644,
      content: FIRST_BOOT_UNIT,
    },
    { path: wants, kind: "dir", mode: 0o755 },
    {
      path: `${wants}/banger-network.service`,
      kind: "symlink",
      mode: 0o777,
      target: "/etc/systemd/system/banger-network.service",
    },
    {
      path: `${wants}/banger-first-boot.service`,
      kind: "symlink",
      mode: 0o777,
      target: "/etc/systemd/system/banger-first-boot.service",
    },
    { path: "etc/ssh/sshd_config.d", kind: "dir", mode: 0o755 },
    {
      path: "etc/ssh/sshd_config.d/banger.conf",
      kind: "file",
      mode: 0o644,
      content: `${SSHD_DROP_IN.join("\n")}\n`,
    },
    { path: "var/lib/banger", kind: "dir", mode: 0o755 },
  ];
}

export const ASSET_TYPE_BITS = { file: S_IFREG, dir: S_IFDIR, symlink: S_IFLNK } as const;
