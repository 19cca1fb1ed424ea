import { BangerError, ErrorCode } from "../api/errors.js";
import { runChecked, type CommandRunner } from "../system/runner.js";

/**
 * The privileged operations banger needs, as one typed interface. Run
 * in-process when the daemon is root; a root helper would implement the same
 * interface over its own socket. Every device and table carries banger's
 * prefix, and nothing without it is touched.
 */
export interface PrivilegedOps {
  ensureBridge(name: string, gatewayCidr: string): Promise<void>;
  createTap(name: string, bridge: string, ownerUid: number): Promise<void>;
  deleteTap(name: string): Promise<void>;
  ensureNat(subnet: string, bridge: string): Promise<void>;
  removeNat(): Promise<void>;
  /** Per-link DNS routing for ~vm in systemd-resolved; a no-op where it does not run. */
  routeResolver(bridge: string, dnsServer: string): Promise<void>;
  unrouteResolver(bridge: string): Promise<void>;
}

const PREFIXES = ["banger", "bg-"];

function checkName(name: string): void {
  if (!PREFIXES.some((p) => name.startsWith(p)) || !/^[A-Za-z0-9_.-]{1,15}$/.test(name)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `refusing to touch network device "${name}": not one of banger's (prefix banger or bg-)`,
    );
  }
}

const NFT_TABLE = "banger";

/** The root implementation: `ip` for links, nftables (iptables as fallback) for NAT. */
export function createRootOps(runner: CommandRunner): PrivilegedOps {
  const ip = (...args: string[]) => runChecked(runner, "ip", args);
  const linkExists = async (name: string) =>
    (await runner.run("ip", ["link", "show", "dev", name])).code === 0;
  return {
    async ensureBridge(name, gatewayCidr) {
      checkName(name);
      if (!(await linkExists(name))) await ip("link", "add", name, "type", "bridge");
      const addrs = await runner.run("ip", ["-o", "-4", "addr", "show", "dev", name]);
      if (!addrs.stdout.includes(` ${gatewayCidr} `))
        await ip("addr", "add", gatewayCidr, "dev", name);
      await ip("link", "set", name, "up");
    },
    async createTap(name, bridge, ownerUid) {
      checkName(name);
      checkName(bridge);
      if (await linkExists(name)) await ip("link", "del", name);
      await ip("tuntap", "add", "dev", name, "mode", "tap", "user", String(ownerUid));
      await ip("link", "set", name, "master", bridge);
      await ip("link", "set", name, "up");
    },
    async deleteTap(name) {
      checkName(name);
      if (await linkExists(name)) await ip("link", "del", name);
    },
    async ensureNat(subnet, bridge) {
      checkName(bridge);
      await runner.run("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]);
      if (await runner.which("nft")) {
        // One table of our own, replaced as a whole: adding it twice is harmless.
        const script = [
          `table ip ${NFT_TABLE}`,
          `delete table ip ${NFT_TABLE}`,
          `table ip ${NFT_TABLE} {`,
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
        "banger",
      ];
      if ((await runner.run("iptables", ["-t", "nat", "-C", "POSTROUTING", ...rule])).code !== 0) {
        await runChecked(runner, "iptables", ["-t", "nat", "-A", "POSTROUTING", ...rule]);
      }
    },
    async routeResolver(bridge, dnsServer) {
      checkName(bridge);
      if (!(await resolvedRuns(runner))) return;
      await runChecked(runner, "resolvectl", ["dns", bridge, dnsServer]);
      await runChecked(runner, "resolvectl", ["domain", bridge, "~vm"]);
    },
    async unrouteResolver(bridge) {
      checkName(bridge);
      if (await resolvedRuns(runner)) await runner.run("resolvectl", ["revert", bridge]);
    },
    async removeNat() {
      if (await runner.which("nft")) {
        await runner.run("nft", ["delete", "table", "ip", NFT_TABLE]);
        return;
      }
      for (let i = 0; i < 10; i++) {
        const rules = await runner.run("iptables", ["-t", "nat", "-S", "POSTROUTING"]);
        const ours = rules.stdout.split("\n").find((l) => l.includes("--comment banger"));
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
