import { BangerError, ErrorCode } from "../api/errors.js";
import { runChecked, type CommandRunner } from "../system/runner.js";
import { isBangerDevice, isIpv4, isIpv4Cidr, TAP_PREFIX } from "./names.js";
import {
  requirePinnedBridge,
  requirePinnedDns,
  requirePinnedGateway,
  requirePinnedSubnet,
  type NetworkPin,
} from "./pin.js";

/** A tap on banger's bridge and the uid that may open it (null when the kernel names no owner). */
export interface TapInfo {
  name: string;
  ownerUid: number | null;
}

/** A `bg-` tap on no bridge: `open` when a process holds it (its carrier is up). */
export interface DetachedTapInfo extends TapInfo {
  open: boolean;
}

/**
 * The privileged operations banger needs, as one typed interface. Run
 * in-process when the daemon is root, and by `banger-helper` (src/net/helper-*.ts)
 * over its own socket otherwise. Every device and table carries banger's
 * prefix, and nothing without it is touched; the root implementation serves
 * one pinned bridge and subnet only (src/net/pin.ts).
 */
export interface PrivilegedOps {
  ensureBridge(name: string, gatewayCidr: string): Promise<void>;
  /**
   * Removes the bridge once nothing is attached to it (daemon stop with no VM running); refused
   * while any device is. Optional: a helper from before this method answers MethodNotFound.
   */
  removeBridge?(name: string): Promise<void>;
  createTap(name: string, bridge: string, ownerUid: number): Promise<void>;
  deleteTap(name: string): Promise<void>;
  /** banger's taps (`bg-`) enslaved to the bridge: what a crashed daemon may have left. */
  listTaps(bridge: string): Promise<TapInfo[]>;
  /**
   * banger's taps (`bg-`) on no bridge: made but never attached (a crash between the two
   * steps). Optional: a helper from before this method answers MethodNotFound.
   */
  listDetachedTaps?(): Promise<DetachedTapInfo[]>;
  ensureNat(subnet: string, bridge: string): Promise<void>;
  removeNat(bridge: string): Promise<void>;
  /** Per-link DNS routing for ~vm in systemd-resolved; a no-op where it does not run. */
  routeResolver(bridge: string, dnsServer: string): Promise<void>;
  unrouteResolver(bridge: string): Promise<void>;
}

export { isBangerDevice, isIpv4, isIpv4Cidr } from "./names.js";

function checkName(name: string): void {
  if (!isBangerDevice(name)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `refusing to touch network device "${name}": not one of banger's (prefix banger or bg-)`,
    );
  }
}

function checkCidr(text: string): void {
  if (!isIpv4Cidr(text))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `"${text}" is not an IPv4 CIDR like 172.30.0.0/24`,
    );
}

/** `ip tuntap show` lines: `bg-x: tap persist user 1000` → owner uid by name. */
export function parseTuntapOwners(text: string): Map<string, number | null> {
  const owners = new Map<string, number | null>();
  for (const line of text.split("\n")) {
    const name = /^([^:\s]+):/.exec(line)?.[1];
    if (!name) continue;
    const user = /\suser (\d+)\b/.exec(line);
    owners.set(name, user ? Number(user[1]) : null);
  }
  return owners;
}

/** `ip -j -d link show` → the link's kind (bridge, tun, veth...), or null for a plain device. */
function linkKind(json: string): string | null {
  try {
    const links = JSON.parse(json) as Array<{ linkinfo?: { info_kind?: string } }>;
    return links[0]?.linkinfo?.info_kind ?? null;
  } catch {
    return null;
  }
}

/**
 * NAT is per bridge: each daemon (one per user, with the helper) owns the table or
 * rules of its own bridge, so one daemon's stop never removes another's NAT.
 */
export function natTable(bridge: string): string {
  return `banger_${bridge.replace(/[^A-Za-z0-9_]/g, "_")}`;
}
const natComment = (bridge: string) => `banger:${bridge}`;

export interface RootOpsOptions {
  /** The one bridge and subnet served, fixed at start (helper flags, or a root daemon's config). */
  pin: NetworkPin;
  /**
   * The helper serves one user: taps are only created for that uid, and an
   * existing tap owned by someone else is never deleted or replaced.
   */
  onlyForUid: number;
}

/** The root implementation: `ip` for links, nftables (iptables as fallback) for NAT. */
export function createRootOps(runner: CommandRunner, opts: RootOpsOptions): PrivilegedOps {
  const { pin } = opts;
  const ip = (...args: string[]) => runChecked(runner, "ip", args);
  const showLink = (name: string) => runner.run("ip", ["link", "show", "dev", name]);
  const linkExists = async (name: string) => (await showLink(name)).code === 0;
  const tapOwners = async () =>
    parseTuntapOwners((await runChecked(runner, "ip", ["tuntap", "show"])).stdout);
  /** An existing device banger is about to remove must be a tap, and, for a helper, its user's. */
  const checkTap = async (name: string) => {
    const owners = await tapOwners();
    if (!owners.has(name))
      throw new BangerError(
        ErrorCode.InvalidParams,
        `refusing to remove "${name}": it is not a tap (a bridge or another device keeps its name)`,
      );
    if (owners.get(name) !== opts.onlyForUid) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `refusing to touch tap "${name}": it belongs to uid ${owners.get(name) ?? "none"}, not ${opts.onlyForUid}`,
      );
    }
    // On another bridge it is another daemon's, whoever owns it.
    const master = / master (\S+) /.exec((await showLink(name)).stdout)?.[1];
    if (master !== undefined && master !== pin.bridge)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `refusing to touch tap "${name}": it is on bridge ${master}, and this helper serves only ${pin.bridge}`,
      );
  };
  return {
    async ensureBridge(name, gatewayCidr) {
      checkName(name);
      checkCidr(gatewayCidr);
      requirePinnedBridge(pin, name, "to set up a bridge");
      requirePinnedGateway(pin, gatewayCidr);
      const shown = await runner.run("ip", ["-j", "-d", "link", "show", "dev", name]);
      if (shown.code !== 0) await ip("link", "add", name, "type", "bridge");
      else if (linkKind(shown.stdout) !== "bridge")
        // e.g. a tap someone named like this bridge: it must not get the gateway address.
        throw new BangerError(
          ErrorCode.Precondition,
          `refusing to use "${name}" as banger's bridge: it exists and is not a bridge (${linkKind(shown.stdout) ?? "unknown kind"})`,
          `remove it (sudo ip link del ${name}) or pin another bridge name`,
        );
      const addrs = await runner.run("ip", ["-o", "-4", "addr", "show", "dev", name]);
      if (!addrs.stdout.includes(` ${gatewayCidr} `))
        await ip("addr", "add", gatewayCidr, "dev", name);
      await ip("link", "set", name, "up");
    },
    async removeBridge(name) {
      checkName(name);
      requirePinnedBridge(pin, name, "to remove a bridge");
      const shown = await runner.run("ip", ["-j", "-d", "link", "show", "dev", name]);
      if (shown.code !== 0) return;
      if (linkKind(shown.stdout) !== "bridge")
        throw new BangerError(
          ErrorCode.InvalidParams,
          `refusing to remove "${name}": it is not a bridge`,
        );
      const attached = await runChecked(runner, "ip", ["-o", "link", "show", "master", name]);
      const names = [...attached.stdout.matchAll(/^\d+: ([^:@\s]+)[@:]/gm)].map((m) => m[1]!);
      if (names.length > 0)
        throw new BangerError(
          ErrorCode.InvalidState,
          `refusing to remove bridge "${name}": ${names.join(", ")} still attached`,
        );
      await ip("link", "del", name);
    },
    async createTap(name, bridge, ownerUid) {
      checkName(name);
      checkName(bridge);
      requirePinnedBridge(pin, bridge, `to attach tap "${name}"`);
      // banger* names are bridges: a tap named like another user's bridge would squat on it.
      if (!name.startsWith(TAP_PREFIX))
        throw new BangerError(
          ErrorCode.InvalidParams,
          `refusing to create tap "${name}": banger's taps are named bg-<something>`,
        );
      if (!Number.isInteger(ownerUid) || ownerUid < 0)
        throw new BangerError(ErrorCode.InvalidParams, `invalid tap owner uid ${ownerUid}`);
      if (ownerUid !== opts.onlyForUid) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          `refusing to create tap "${name}" for uid ${ownerUid}: this helper serves uid ${opts.onlyForUid}`,
        );
      }
      if (await linkExists(name)) {
        await checkTap(name);
        await ip("link", "del", name);
      }
      await ip("tuntap", "add", "dev", name, "mode", "tap", "user", String(ownerUid));
      try {
        await ip("link", "set", name, "master", bridge);
        await ip("link", "set", name, "up");
      } catch (err) {
        // A tap off the bridge is invisible to the pool's leftover sweep: never leave one.
        await runner.run("ip", ["link", "del", name]).catch(() => undefined);
        throw err;
      }
    },
    async deleteTap(name) {
      checkName(name);
      if (!(await linkExists(name))) return;
      await checkTap(name);
      await ip("link", "del", name);
    },
    async listTaps(bridge) {
      checkName(bridge);
      requirePinnedBridge(pin, bridge, "to list taps");
      if (!(await linkExists(bridge))) return [];
      const enslaved = await runChecked(runner, "ip", ["-o", "link", "show", "master", bridge]);
      const owners = await tapOwners();
      const taps: TapInfo[] = [];
      for (const m of enslaved.stdout.matchAll(/^\d+: ([^:@\s]+)[@:]/gm)) {
        const name = m[1]!;
        if (name.startsWith(TAP_PREFIX) && owners.has(name))
          taps.push({ name, ownerUid: owners.get(name) ?? null });
      }
      return taps;
    },
    async listDetachedTaps() {
      const links = await runChecked(runner, "ip", ["-o", "link", "show"]);
      const owners = await tapOwners();
      const taps: DetachedTapInfo[] = [];
      for (const m of links.stdout.matchAll(/^\d+: ([^:@\s]+)[@:]\s*<([^>]*)>(.*)$/gm)) {
        const [, name, flags, rest] = m as unknown as [string, string, string, string];
        if (!name.startsWith(TAP_PREFIX) || !owners.has(name) || / master /.test(` ${rest} `))
          continue;
        taps.push({
          name,
          ownerUid: owners.get(name) ?? null,
          open: flags.split(",").includes("LOWER_UP"),
        });
      }
      return taps;
    },
    async ensureNat(subnet, bridge) {
      checkName(bridge);
      checkCidr(subnet);
      requirePinnedBridge(pin, bridge, "to set up NAT");
      requirePinnedSubnet(pin, subnet);
      await runner.run("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]);
      if (await runner.which("nft")) {
        // One table of this bridge's, replaced as a whole: adding it twice is harmless.
        const table = natTable(bridge);
        const script = [
          `table ip ${table}`,
          `delete table ip ${table}`,
          `table ip ${table} {`,
          "  chain postrouting { type nat hook postrouting priority 100; policy accept;",
          `    ip saddr ${subnet} oifname != "${bridge}" masquerade`,
          "  }",
          "  chain forward { type filter hook forward priority 0; policy accept;",
          `    iifname "${bridge}" accept`,
          `    oifname "${bridge}" ct state established,related accept`,
          "  }",
          "}",
        ].join("\n");
        await runChecked(runner, "nft", ["-f", "-"], { input: `${script}\n` });
        return;
      }
      const rule = [
        "-s",
        subnet,
        "!",
        "-o",
        bridge,
        "-j",
        "MASQUERADE",
        "-m",
        "comment",
        "--comment",
        natComment(bridge),
      ];
      if ((await runner.run("iptables", ["-t", "nat", "-C", "POSTROUTING", ...rule])).code !== 0) {
        await runChecked(runner, "iptables", ["-t", "nat", "-A", "POSTROUTING", ...rule]);
      }
    },
    async routeResolver(bridge, dnsServer) {
      checkName(bridge);
      if (!isIpv4(dnsServer))
        throw new BangerError(ErrorCode.InvalidParams, `"${dnsServer}" is not an IPv4 address`);
      requirePinnedBridge(pin, bridge, "to route the resolver");
      requirePinnedDns(pin, dnsServer);
      if (!(await resolvedRuns(runner))) return;
      await runChecked(runner, "resolvectl", ["dns", bridge, dnsServer]);
      await runChecked(runner, "resolvectl", ["domain", bridge, "~vm"]);
    },
    async unrouteResolver(bridge) {
      checkName(bridge);
      requirePinnedBridge(pin, bridge, "to unroute the resolver");
      if (await resolvedRuns(runner)) await runner.run("resolvectl", ["revert", bridge]);
    },
    async removeNat(bridge) {
      checkName(bridge);
      requirePinnedBridge(pin, bridge, "to remove NAT");
      if (await runner.which("nft")) {
        await runner.run("nft", ["delete", "table", "ip", natTable(bridge)]);
        return;
      }
      for (let i = 0; i < 10; i++) {
        const rules = await runner.run("iptables", ["-t", "nat", "-S", "POSTROUTING"]);
        const ours = rules.stdout
          .split("\n")
          .find((l) => l.includes(`--comment ${natComment(bridge)}`));
        if (!ours) break;
        await runner.run("iptables", ["-t", "nat", ...ours.replace(/^-A /, "-D ").split(" ")]);
      }
    },
  };
}

async function resolvedRuns(runner: CommandRunner): Promise<boolean> {
  if (!(await runner.which("resolvectl"))) return false;
  return (await runner.run("resolvectl", ["status"], { timeoutMs: 5_000 })).code === 0;
}
