import assert from "node:assert/strict";
import { test } from "node:test";
import { createRootOps, parseTuntapOwners, natTable } from "../src/net/privileged.js";
import type { CommandResult, CommandRunner, RunOptions } from "../src/system/runner.js";

// The root implementation's exact commands, against a scripted runner: resolver
// routing cannot run here (systemd is not PID 1), and tap ownership is checked
// without touching the host.

interface Scripted {
  runner: CommandRunner;
  calls: string[];
}

function scriptedRunner(
  tools: string[],
  answer: (cmd: string, args: string[], opts?: RunOptions) => Partial<CommandResult> = () => ({}),
): Scripted {
  const calls: string[] = [];
  return {
    calls,
    runner: {
      which: async (cmd) => (tools.includes(cmd) ? `/usr/bin/${cmd}` : null),
      run: async (cmd, args, opts) => {
        calls.push([cmd, ...args].join(" "));
        return { code: 0, signal: null, stdout: "", stderr: "", ...answer(cmd, args, opts) };
      },
    },
  };
}

test("resolver routing: ~vm to the bridge address through resolvectl, undone by revert", async () => {
  const s = scriptedRunner(["resolvectl"]);
  const ops = createRootOps(s.runner);
  await ops.routeResolver("banger0", "172.30.0.1");
  await ops.unrouteResolver("banger0");
  assert.deepEqual(s.calls, [
    "resolvectl status",
    "resolvectl dns banger0 172.30.0.1",
    "resolvectl domain banger0 ~vm",
    "resolvectl status",
    "resolvectl revert banger0",
  ]);
});

test("resolver routing is a no-op where systemd-resolved does not run", async () => {
  const absent = scriptedRunner([]);
  await createRootOps(absent.runner).routeResolver("banger0", "172.30.0.1");
  await createRootOps(absent.runner).unrouteResolver("banger0");
  assert.deepEqual(absent.calls, [], "no resolvectl binary: nothing runs");
  const down = scriptedRunner(["resolvectl"], (cmd, args) =>
    cmd === "resolvectl" && args[0] === "status" ? { code: 1, stderr: "not running" } : {},
  );
  await createRootOps(down.runner).routeResolver("banger0", "172.30.0.1");
  await createRootOps(down.runner).unrouteResolver("banger0");
  assert.deepEqual(down.calls, ["resolvectl status", "resolvectl status"]);
});

test("resolver routing refuses foreign links and bad addresses before running anything", async () => {
  const s = scriptedRunner(["resolvectl"]);
  const ops = createRootOps(s.runner);
  await assert.rejects(ops.routeResolver("eth0", "172.30.0.1"), /not one of banger's/);
  await assert.rejects(ops.routeResolver("banger0", "172.30.0.1; rm"), /not an IPv4 address/);
  await assert.rejects(ops.unrouteResolver("wlan0"), /not one of banger's/);
  assert.deepEqual(s.calls, []);
});

const TUNTAP = "bg-mine: tap persist user 1000\nbg-theirs: tap persist user 0\ntun0: tun\n";
const ENSLAVED = [
  "7: bg-mine: <BROADCAST,MULTICAST,UP> mtu 1500 master banger-p state DOWN",
  "8: bg-theirs: <BROADCAST,MULTICAST,UP> mtu 1500 master banger-p state DOWN",
  "9: vethx@if3: <BROADCAST,MULTICAST,UP> mtu 1500 master banger-p state UP",
].join("\n");

function hostWithTaps(tools = ["ip"]): Scripted {
  return scriptedRunner(tools, (cmd, args) => {
    if (cmd !== "ip") return {};
    const a = args.join(" ");
    if (a === "tuntap show") return { stdout: TUNTAP };
    if (a === "-o link show master banger-p") return { stdout: ENSLAVED };
    if (a.startsWith("link show dev "))
      return { code: /bg-(mine|theirs)|banger-p/.test(a) ? 0 : 1 };
    return {};
  });
}

test("tap owners come from `ip tuntap show`", () => {
  assert.deepEqual(
    [...parseTuntapOwners(TUNTAP)],
    [
      ["bg-mine", 1000],
      ["bg-theirs", 0],
      ["tun0", null],
    ],
  );
});

test("listTaps: banger's taps on the bridge, with their owners", async () => {
  const s = hostWithTaps();
  assert.deepEqual(await createRootOps(s.runner).listTaps("banger-p"), [
    { name: "bg-mine", ownerUid: 1000 },
    { name: "bg-theirs", ownerUid: 0 },
  ]);
});

test("a helper serving one uid creates taps only for it and never deletes another's", async () => {
  const s = hostWithTaps();
  const ops = createRootOps(s.runner, { onlyForUid: 1000 });
  await assert.rejects(ops.createTap("bg-new", "banger-p", 0), /this helper serves uid 1000/);
  await assert.rejects(ops.deleteTap("bg-theirs"), /belongs to uid 0, not 1000/);
  await assert.rejects(ops.createTap("bg-theirs", "banger-p", 1000), /belongs to uid 0/);
  assert.ok(!s.calls.some((c) => c.startsWith("ip link del")), s.calls.join("\n"));
  await ops.deleteTap("bg-mine");
  await ops.createTap("bg-new", "banger-p", 1000);
  assert.deepEqual(
    s.calls.filter((c) => /^ip (link del|tuntap add|link set)/.test(c)),
    [
      "ip link del bg-mine",
      "ip tuntap add dev bg-new mode tap user 1000",
      "ip link set bg-new master banger-p",
      "ip link set bg-new up",
    ],
  );
});

test("NAT refuses a subnet that is not a plain CIDR (it goes into an nft script)", async () => {
  const s = scriptedRunner(["nft", "sysctl"]);
  const ops = createRootOps(s.runner);
  await assert.rejects(ops.ensureNat("10.0.0.0/24 } flush ruleset", "banger0"), /not an IPv4 CIDR/);
  assert.deepEqual(s.calls, []);
  await ops.ensureNat("172.31.55.0/24", "banger-t5");
  assert.match(s.calls.at(-1) ?? "", /^nft -f -/);
});

test("only taps are ever removed: a bridge with a tap's name survives deleteTap and createTap", async () => {
  const s = hostWithTaps();
  const ops = createRootOps(s.runner, { onlyForUid: 1000 });
  // banger-p exists (link show answers) but is not in `ip tuntap show`: it is a bridge.
  await assert.rejects(ops.deleteTap("banger-p"), /is not a tap/);
  await assert.rejects(ops.createTap("banger-p", "banger-p", 1000), /is not a tap/);
  await assert.rejects(createRootOps(s.runner).deleteTap("banger-p"), /is not a tap/);
  assert.ok(!s.calls.some((c) => c.startsWith("ip link del")), s.calls.join("\n"));
});

test("a tap that cannot join the bridge is removed again", async () => {
  const s = scriptedRunner(["ip"], (cmd, args) => {
    const a = args.join(" ");
    if (a.startsWith("link show dev ")) return { code: 1 };
    if (a.endsWith("master banger-p")) return { code: 2, stderr: "RTNETLINK answers: busy" };
    return {};
  });
  await assert.rejects(createRootOps(s.runner).createTap("bg-x", "banger-p", 0), /busy/);
  assert.deepEqual(
    s.calls.filter((c) => /^ip (link del|tuntap add)/.test(c)),
    ["ip tuntap add dev bg-x mode tap user 0", "ip link del bg-x"],
  );
});

test("NAT is per bridge: two daemons' tables never replace or remove each other", async () => {
  const s = scriptedRunner(["nft", "sysctl"]);
  const ops = createRootOps(s.runner);
  await ops.ensureNat("172.30.0.0/24", "banger0");
  await ops.ensureNat("172.31.55.0/24", "banger-t5");
  const scripts = s.calls.filter((c) => c.startsWith("nft -f"));
  assert.equal(scripts.length, 2);
  assert.equal(natTable("banger0"), "banger_banger0");
  assert.equal(natTable("banger-t5"), "banger_banger_t5");
  await ops.removeNat("banger-t5");
  assert.equal(s.calls.at(-1), "nft delete table ip banger_banger_t5");
});
