import { S_IFDIR, S_IFLNK, S_IFREG } from "../disk/entry-meta.js";
import { IMAGE_ENV_SCRIPT } from "./image-env.js";
import type { GuestScripts } from "./scripts.js";
import { TOOLKIT_DIR } from "../config/defaults.js";
import { TOOLKIT_LOADER, type HostToolkit } from "./toolkit.js";

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
  /** A host file copied in (the toolkit's binaries and libraries). */
  source?: string;
  /** With `source`: the ELF interpreter written into the copy (toolkit.ts withInterpreter). */
  interpreter?: string;
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

// The image's own ssh.service wins when it has sshd; otherwise banger's dropbear serves.
const SSH_UNIT = `[Unit]
Description=banger: SSH server for images without sshd (dropbear from banger's toolkit)
ConditionPathExists=!/usr/sbin/sshd
After=banger-first-boot.service banger-network.service
Wants=banger-first-boot.service

[Service]
ExecStart=/${TOOLKIT_DIR}/ssh-server
Restart=always
RestartSec=1
# Restarting dropbear (for a clone's new host key, or after a crash) leaves its sessions running,
# as Debian's ssh.service does for sshd.
KillMode=process

[Install]
WantedBy=multi-user.target
`;

// No ConditionPathExists on the marker: first-boot.sh checks it itself, and a clone booted cold
// after a failed restore (banger.renew=1) must renew keys its snapshot already made.
const FIRST_BOOT_UNIT = `[Unit]
Description=banger: first boot (SSH host keys)
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

/** The scripts injected under /usr/lib/banger/, byte for byte as guest-scripts/ holds them. */
export type AssetScripts = Pick<
  GuestScripts,
  | "networkSetup"
  | "firstBoot"
  | "init"
  | "sshServer"
  | "loginShell"
  | "imageEnv"
  | "imageProfile"
  | "minimalProfile"
>;

/** The toolkit under /usr/lib/banger/, and outside it only the systemd units, the sshd drop-in and /var/lib/banger. */
export function guestAssets(scripts: AssetScripts, toolkit: HostToolkit): GuestAsset[] {
  const wants = "etc/systemd/system/multi-user.target.wants";
  return [
    { path: TOOLKIT_DIR, kind: "dir", mode: 0o755 },
    { path: `${TOOLKIT_DIR}/bin`, kind: "dir", mode: 0o755 },
    { path: `${TOOLKIT_DIR}/lib`, kind: "dir", mode: 0o755 },
    ...toolkit.files.map((f): GuestAsset => ({
      path: f.path,
      kind: "file",
      mode: f.mode,
      source: f.source,
      ...(f.interpreter ? { interpreter: f.interpreter } : {}),
    })),
    // The interpreter the copied dropbear names: the loader copied beside its libraries.
    {
      path: `${TOOLKIT_DIR}/lib/ld.so`,
      kind: "symlink",
      mode: 0o777,
      target: TOOLKIT_LOADER,
    },
    // bin/sh is the shebang of banger's scripts; every applet is on their PATH.
    ...toolkit.applets.map((name): GuestAsset => ({
      path: `${TOOLKIT_DIR}/bin/${name}`,
      kind: "symlink",
      mode: 0o777,
      target: "busybox",
    })),
    {
      path: `${TOOLKIT_DIR}/login-shell`,
      kind: "file",
      mode: 0o755,
      content: scripts.loginShell,
    },
    // Sourced before user commands; a no-op unless finalisation wrote image.env / image.workdir.
    { path: IMAGE_ENV_SCRIPT, kind: "file", mode: 0o644, content: scripts.imageEnv },
    {
      path: "usr/lib/banger/network-setup",
      kind: "file",
      mode: 0o755,
      content: scripts.networkSetup,
    },
    { path: "usr/lib/banger/first-boot", kind: "file", mode: 0o755, content: scripts.firstBoot },
    // For images without systemd (booted with banger.init=/usr/lib/banger/init, recorded at pull).
    { path: "usr/lib/banger/init", kind: "file", mode: 0o755, content: scripts.init },
    { path: "usr/lib/banger/ssh-server", kind: "file", mode: 0o755, content: scripts.sshServer },
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
    {
      path: "etc/systemd/system/banger-ssh.service",
      kind: "file",
      mode: 0o644,
      content: SSH_UNIT,
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
    {
      path: `${wants}/banger-ssh.service`,
      kind: "symlink",
      mode: 0o777,
      target: "/etc/systemd/system/banger-ssh.service",
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
