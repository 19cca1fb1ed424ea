import { pathToFileURL } from "node:url";
import path from "node:path";
import { DEFAULT_BRIDGE, DEFAULT_SUBNET } from "../config/defaults.js";

/** The first line of every unit banger writes: uninstall removes only files that carry it. */
export const UNIT_MARKER = "# Written by 'banger system install'";

/** Where banger's programs live: the node binary and the checkout whose bin/ holds the launchers. */
export interface UnitPaths {
  nodePath: string;
  installDir: string;
}

export const DAEMON_UNIT = "bangerd.service";

export function helperUnitName(user: string): string {
  return `banger-helper-${user}.service`;
}

/** Both end up in unit file names and ExecStart lines, so only plain POSIX-ish names pass. */
export function isUnitSafeUserName(name: string): boolean {
  return /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(name);
}

/** `%` starts a specifier in most unit settings; `%%` is a literal percent sign. */
function escapeSpecifiers(value: string): string {
  return value.replace(/%/g, "%%");
}

/** One ExecStart word: bare when plain, else double-quoted with systemd's escapes. */
export function execWord(word: string): string {
  if (/[\x00-\x1f\x7f]/.test(word))
    throw new Error(`cannot put a control character in a unit file: ${JSON.stringify(word)}`);
  if (/^[A-Za-z0-9_@+=:,./-]+$/.test(word)) return word;
  const escaped = word
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"')
    .replace(/%/g, "%%")
    .replace(/\$/g, "$$$$");
  return `"${escaped}"`;
}

function execLine(words: string[]): string {
  return words.map(execWord).join(" ");
}

function docUrl(paths: UnitPaths, page: string): string {
  return escapeSpecifiers(pathToFileURL(path.join(paths.installDir, "docs", page)).href);
}

/**
 * The root helper for one user, as a system unit. Hardened down to what `ip`, `nft`/`iptables`
 * and handing the socket to the user need; everything else about the host is read-only.
 */
export function helperUnit(
  user: string,
  paths: UnitPaths,
  pin: { bridge: string; subnet: string },
): string {
  const bin = path.join(paths.installDir, "bin", "banger-helper");
  const args = [
    paths.nodePath,
    bin,
    "--user",
    user,
    "--bridge",
    pin.bridge,
    "--subnet",
    pin.subnet,
  ];
  return `${UNIT_MARKER} for user ${user}; 'banger system uninstall' removes it.
[Unit]
Description=banger-helper for ${user}: bridge, tap and NAT steps for banger's unprivileged daemon
Documentation=${docUrl(paths, "helper.md")}
After=network.target

[Service]
Type=simple
# The one bridge and subnet this user's helper may manage; another user's helper gets others.
ExecStart=${execLine(args)}
Restart=on-failure
RestartSec=2s
# Every user's helper socket lives in /run/banger-helper: stopping one must not remove the others'.
RuntimeDirectory=banger-helper
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
UMask=0077
NoNewPrivileges=yes
# ip and nft need CAP_NET_ADMIN, the iptables fallback also CAP_NET_RAW; CAP_CHOWN hands the
# socket to the user. No CAP_DAC_*: node and the checkout are root's own ('banger system install'
# refuses anything else).
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
ProtectSystem=strict
# /proc/sys is read-only but for the one sysctl NAT turns on.
ProtectKernelTunables=yes
ReadWritePaths=/run/banger-helper /proc/sys/net/ipv4/ip_forward
ProtectHome=read-only
PrivateTmp=yes
# Not PrivateDevices: taps are made through /dev/net/tun. Not MemoryDenyWriteExecute: node's JIT
# needs it.
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
`;
}

/** The `--bridge`/`--subnet` a helper unit passes; banger's defaults for units written before them. */
export function helperUnitPin(content: string): { bridge: string; subnet: string } {
  const exec = /^ExecStart=(.*)$/m.exec(content)?.[1] ?? "";
  return {
    bridge: / --bridge (\S+)/.exec(exec)?.[1] ?? DEFAULT_BRIDGE,
    subnet: / --subnet (\S+)/.exec(exec)?.[1] ?? DEFAULT_SUBNET,
  };
}

/** bangerd as a user unit: starts at login (or boot, with lingering) and comes back after a crash. */
export function daemonUnit(user: string, paths: UnitPaths): string {
  const bin = path.join(paths.installDir, "bin", "bangerd");
  return `${UNIT_MARKER} for user ${user}; 'banger system uninstall' removes it.
[Unit]
Description=bangerd: banger's daemon (state, VMs, networking)
Documentation=${docUrl(paths, "daemon.md")}

[Service]
Type=simple
ExecStart=${execLine([paths.nodePath, bin])}
Restart=on-failure
RestartSec=2s
# VMs are started detached and outlive a daemon stop or restart, as they do without systemd.
KillMode=process

[Install]
WantedBy=default.target
`;
}
