import assert from "node:assert/strict";
import { test } from "node:test";
import { checkPinAgainstHost, makePin, type NetworkPin } from "../src/net/pin.js";
import {
  createRootOps,
  parseTuntapOwners,
  natTable,
  type PrivilegedOps,
} from "../src/net/privileged.js";
import {
  createCommandRunner,
  type CommandResult,
  type CommandRunner,
  type RunOptions,
} from "../src/system/runner.js";

// The root implementation's exact commands, against a scripted runner: resolver
// routing cannot run here (systemd is not PID 1), and tap ownership is checked
// without touching the host.

interface Scripted {
  runner: CommandRunner;
  calls: string[];
  /** What each call got on stdin (null: nothing), index for index with `calls`. */
  inputs: Array<string | null>;
}

function scriptedRunner(
  tools: string[],
  answer: (cmd: string, args: string[], opts?: RunOptions) => Partial<CommandResult> = () => ({}),
): Scripted {
  const calls: string[] = [];
  const inputs: Array<string | null> = [];
  return {
    calls,
    inputs,
    runner: {
      which: async (cmd) => (tools.includes(cmd) ? `/usr/bin/${cmd}` : null),
      run: async (cmd, args, opts) => {
        calls.push([cmd, ...args].join(" "));
        inputs.push(opts?.input === undefined ? null : opts.input.toString());
        return { code: 0, signal: null, stdout: "", stderr: "", ...answer(cmd, args, opts) };
      },
    },
  };
}

const PIN0 = makePin("banger0", "172.30.0.0/24");
const PIN_P = makePin("banger-p", "172.31.66.0/24");
const PIN_T5 = makePin("banger-t5", "172.31.55.0/24");

/** Root ops pinned as a helper (or a root daemon) would be; uid 1000 unless told. */
function rootOps(runner: CommandRunner, pin: NetworkPin = PIN0, uid = 1000): PrivilegedOps {
  return createRootOps(runner, { pin, onlyForUid: uid });
}

test("resolver routing: ~vm to the bridge address through resolvectl, undone by revert", async () => {
  const s = scriptedRunner(["resolvectl"]);
  const ops = rootOps(s.runner);
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
  await rootOps(absent.runner).routeResolver("banger0", "172.30.0.1");
  await rootOps(absent.runner).unrouteResolver("banger0");
  assert.deepEqual(absent.calls, [], "no resolvectl binary: nothing runs");
  const down = scriptedRunner(["resolvectl"], (cmd, args) =>
    cmd === "resolvectl" && args[0] === "status" ? { code: 1, stderr: "not running" } : {},
  );
  await rootOps(down.runner).routeResolver("banger0", "172.30.0.1");
  await rootOps(down.runner).unrouteResolver("banger0");
  assert.deepEqual(down.calls, ["resolvectl status", "resolvectl status"]);
});

test("resolver routing refuses foreign links and bad addresses before running anything", async () => {
  const s = scriptedRunner(["resolvectl"]);
  const ops = rootOps(s.runner);
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
  assert.deepEqual(await rootOps(s.runner, PIN_P).listTaps("banger-p"), [
    { name: "bg-mine", ownerUid: 1000 },
    { name: "bg-theirs", ownerUid: 0 },
  ]);
});

test("a helper serving one uid creates taps only for it and never deletes another's", async () => {
  const s = hostWithTaps();
  const ops = rootOps(s.runner, PIN_P);
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

/** The nft script banger must give for bridge banger-t5, subnet 172.31.55.0/24. */
const NAT_T5 = [
  "table ip banger_banger_t5",
  "delete table ip banger_banger_t5",
  "table ip banger_banger_t5 {",
  "  chain postrouting { type nat hook postrouting priority 100; policy accept;",
  '    ip saddr 172.31.55.0/24 oifname != "banger-t5" masquerade',
  "  }",
  "  chain forward { type filter hook forward priority 0; policy accept;",
  '    iifname "banger-t5" accept',
  '    oifname "banger-t5" ct state established,related accept',
  "  }",
  "}",
  "",
].join("\n");

test("NAT refuses a subnet that is not a plain CIDR (it goes into an nft script)", async () => {
  const s = scriptedRunner(["nft", "sysctl"]);
  const ops = rootOps(s.runner, PIN_T5);
  await assert.rejects(ops.ensureNat("10.0.0.0/24 } flush ruleset", "banger0"), /not an IPv4 CIDR/);
  assert.deepEqual(s.calls, []);
  await ops.ensureNat("172.31.55.0/24", "banger-t5");
  assert.deepEqual(s.calls, ["sysctl -q -w net.ipv4.ip_forward=1", "nft -f -"]);
  // The script on nft's stdin: this bridge's own table, replaced whole, masquerading only its subnet.
  assert.equal(s.inputs[1], NAT_T5);
});

test("the NAT script is one nft accepts (nft -c: checked, nothing changed)", async (t) => {
  const nft = await createCommandRunner().which("nft");
  if (!nft) {
    t.skip("nft is not installed here: the script was checked as text only");
    return;
  }
  if (process.getuid?.() !== 0) {
    t.skip("nft -c needs CAP_NET_ADMIN and this test is not root");
    return;
  }
  const s = scriptedRunner(["nft", "sysctl"]);
  await rootOps(s.runner, PIN_T5).ensureNat("172.31.55.0/24", "banger-t5");
  const script = s.inputs[s.calls.indexOf("nft -f -")];
  assert.equal(script, NAT_T5);
  const real = await createCommandRunner().run(nft, ["-c", "-f", "-"], { input: script! });
  assert.equal(real.code, 0, `nft -c rejected banger's script:\n${real.stderr}`);
  // And nft does reject a broken one here: the check is not a no-op.
  const broken = await createCommandRunner().run(nft, ["-c", "-f", "-"], {
    input: script!.replace("masquerade", "masquerad"),
  });
  assert.notEqual(broken.code, 0);
});

test("without nft, NAT is one iptables MASQUERADE rule, added once, removed by its comment", async (t) => {
  const rule =
    "-s 172.31.55.0/24 ! -o banger-t5 -j MASQUERADE -m comment --comment banger:banger-t5";
  // The kernel's nat table, as `iptables -S` prints it; -C finds a rule only once it is there.
  const table = ["-P POSTROUTING ACCEPT", "-A POSTROUTING -s 10.9.0.0/24 -j MASQUERADE"];
  const s = scriptedRunner(["sysctl", "iptables"], (_cmd, args) => {
    const a = args.join(" ");
    if (a.startsWith("-t nat -C POSTROUTING "))
      return { code: table.includes(`-A POSTROUTING ${a.slice(22)}`) ? 0 : 1 };
    if (a.startsWith("-t nat -A ")) table.push(a.slice(7));
    if (a.startsWith("-t nat -D ")) table.splice(table.indexOf(`-A ${a.slice(10)}`), 1);
    if (a === "-t nat -S POSTROUTING") return { stdout: `${table.join("\n")}\n` };
    return {};
  });
  const ops = rootOps(s.runner, PIN_T5);
  await ops.ensureNat("172.31.55.0/24", "banger-t5");
  await ops.ensureNat("172.31.55.0/24", "banger-t5");
  assert.deepEqual(s.calls, [
    "sysctl -q -w net.ipv4.ip_forward=1",
    `iptables -t nat -C POSTROUTING ${rule}`,
    `iptables -t nat -A POSTROUTING ${rule}`,
    "sysctl -q -w net.ipv4.ip_forward=1",
    `iptables -t nat -C POSTROUTING ${rule}`,
  ]);
  assert.deepEqual(table, [
    "-P POSTROUTING ACCEPT",
    "-A POSTROUTING -s 10.9.0.0/24 -j MASQUERADE",
    `-A POSTROUTING ${rule}`,
  ]);
  s.calls.length = 0;
  await ops.removeNat("banger-t5");
  assert.deepEqual(s.calls, [
    "iptables -t nat -S POSTROUTING",
    `iptables -t nat -D POSTROUTING ${rule}`,
    "iptables -t nat -S POSTROUTING",
  ]);
  assert.deepEqual(table, ["-P POSTROUTING ACCEPT", "-A POSTROUTING -s 10.9.0.0/24 -j MASQUERADE"]);

  // The real iptables parses the rule: -C answers 1 (well-formed, not there), never 2 (bad rule).
  const iptables = await createCommandRunner().which("iptables");
  if (!iptables || process.getuid?.() !== 0) {
    t.diagnostic("iptables (as root) is not available: the rule was checked as argv only");
    return;
  }
  const real = await createCommandRunner().run(iptables, [
    "-t",
    "nat",
    "-C",
    "POSTROUTING",
    ...rule.split(" "),
  ]);
  assert.equal(real.code, 1, `iptables -C: ${real.stderr}`);
  assert.match(real.stderr, /does a matching rule exist/);
});

test("only taps are ever removed: a bridge with a tap's name survives deleteTap and createTap", async () => {
  const s = hostWithTaps();
  const ops = rootOps(s.runner, PIN_P);
  // banger-p exists (link show answers) but is not in `ip tuntap show`: it is a bridge.
  await assert.rejects(ops.deleteTap("banger-p"), /is not a tap/);
  await assert.rejects(ops.createTap("banger-p", "banger-p", 1000), /taps are named bg-/);
  await assert.rejects(rootOps(s.runner, PIN_P, 0).deleteTap("banger-p"), /is not a tap/);
  assert.ok(!s.calls.some((c) => c.startsWith("ip link del")), s.calls.join("\n"));
});

test("a tap that cannot join the bridge is removed again", async () => {
  const s = scriptedRunner(["ip"], (cmd, args) => {
    const a = args.join(" ");
    if (a.startsWith("link show dev ")) return { code: 1 };
    if (a.endsWith("master banger-p")) return { code: 2, stderr: "RTNETLINK answers: busy" };
    return {};
  });
  await assert.rejects(rootOps(s.runner, PIN_P, 0).createTap("bg-x", "banger-p", 0), /busy/);
  assert.deepEqual(
    s.calls.filter((c) => /^ip (link del|tuntap add)/.test(c)),
    ["ip tuntap add dev bg-x mode tap user 0", "ip link del bg-x"],
  );
});

test("NAT is per bridge: two daemons' tables never replace or remove each other", async () => {
  const s = scriptedRunner(["nft", "sysctl"]);
  await rootOps(s.runner, PIN0).ensureNat("172.30.0.0/24", "banger0");
  await rootOps(s.runner, PIN_T5).ensureNat("172.31.55.0/24", "banger-t5");
  const scripts = s.inputs.filter((_, i) => s.calls[i] === "nft -f -");
  assert.equal(scripts.length, 2);
  // Each script names only its own table and bridge.
  assert.match(scripts[0]!, /^table ip banger_banger0\n/);
  assert.doesNotMatch(scripts[0]!, /banger-t5|banger_banger_t5/);
  assert.equal(scripts[1], NAT_T5);
  assert.equal(natTable("banger0"), "banger_banger0");
  assert.equal(natTable("banger-t5"), "banger_banger_t5");
  await rootOps(s.runner, PIN_T5).removeNat("banger-t5");
  assert.equal(s.calls.at(-1), "nft delete table ip banger_banger_t5");
});

// Issue #10 item 3: the helper's user must not get host-wide network control.
test("pinned ops refuse every other bridge, subnet, gateway and resolver address before running anything", async () => {
  const s = scriptedRunner(["nft", "sysctl", "resolvectl", "iptables"]);
  const ops = rootOps(s.runner, PIN0);
  const refused = (p: Promise<unknown>) =>
    assert.rejects(p, /this helper serves only bridge banger0 with subnet 172\.30\.0\.0\/24/);
  // A host route for half the internet through banger's bridge.
  await refused(ops.ensureBridge("banger0", "8.8.8.8/1"));
  await refused(ops.ensureBridge("banger0", "172.30.0.1/16"));
  await refused(ops.ensureBridge("banger0", "172.30.0.7/24"));
  await refused(ops.ensureBridge("banger-other", "172.30.0.1/24"));
  // Masquerading the whole world, or another subnet, or through another bridge.
  await refused(ops.ensureNat("0.0.0.0/0", "banger0"));
  await refused(ops.ensureNat("172.30.0.0/16", "banger0"));
  await refused(ops.ensureNat("172.30.0.0/24", "banger-other"));
  // Another user's bridge: their NAT, their resolver routing, their taps.
  await refused(ops.removeNat("banger-other"));
  await refused(ops.unrouteResolver("banger-other"));
  await refused(ops.routeResolver("banger-other", "172.30.0.1"));
  await refused(ops.routeResolver("banger0", "8.8.8.8"));
  await refused(ops.createTap("bg-aaaaaaaaaaaa", "banger-other", 1000));
  await refused(ops.listTaps("banger-other"));
  assert.equal(s.calls.length, 0, `nothing refused ran a command: ${s.calls.join("; ")}`);
  // And what is pinned works, with the pin's values in the script.
  await ops.ensureNat("172.30.0.0/24", "banger0");
  assert.ok(
    s.calls.some((c) => c.startsWith("nft -f")),
    s.calls.join("\n"),
  );
});

test("a tap of the served uid on another bridge is not deleted or replaced", async () => {
  const s = scriptedRunner(["ip"], (cmd, args) => {
    const a = args.join(" ");
    if (a === "tuntap show") return { stdout: "bg-mine: tap persist user 1000\n" };
    if (a === "link show dev bg-mine")
      return {
        stdout:
          "7: bg-mine: <BROADCAST,MULTICAST> mtu 1500 qdisc noop master banger-other state DOWN mode DEFAULT\n",
      };
    return { code: 1 };
  });
  const ops = rootOps(s.runner, PIN_P);
  await assert.rejects(
    ops.deleteTap("bg-mine"),
    /it is on bridge banger-other, and this helper serves only banger-p/,
  );
  await assert.rejects(ops.createTap("bg-mine", "banger-p", 1000), /it is on bridge banger-other/);
  assert.ok(!s.calls.some((c) => /^ip (link del|tuntap add|link set)/.test(c)), s.calls.join("\n"));
});

test("a pin is a banger bridge and a private subnet given as its network, /16 to /29", () => {
  assert.deepEqual(makePin("banger0", "172.30.0.0/24"), {
    bridge: "banger0",
    subnet: "172.30.0.0/24",
    prefix: 24,
    gateway: "172.30.0.1",
  });
  makePin("banger1", "10.200.0.0/16");
  makePin("banger1", "192.168.77.0/29");
  for (const [bridge, subnet, why] of [
    ["banger0", "8.0.0.0/8", /prefix \/8 must be between/],
    ["banger0", "8.8.8.0/24", /not a private \(RFC 1918\) range/],
    ["banger0", "172.32.0.0/24", /not a private/],
    ["banger0", "0.0.0.0/0", /prefix \/0/],
    ["banger0", "10.0.0.0/8", /prefix \/8/],
    ["banger0", "172.30.0.1/24", /not a network address: did you mean 172\.30\.0\.0\/24/],
    ["banger0", "172.30.0.0/30 ", /not an IPv4 CIDR/],
    ["eth0", "172.30.0.0/24", /not a banger bridge name/],
    ["bg-abc", "172.30.0.0/24", /not a banger bridge name/],
    ["banger0; rm -rf", "172.30.0.0/24", /not a banger bridge name/],
  ] as const)
    assert.throws(() => makePin(bridge, subnet), why, `${bridge} ${subnet}`);
});

const HOST_ROUTES = JSON.stringify([
  { dst: "default", gateway: "192.0.2.1", dev: "eth0" },
  { dst: "192.0.2.0/24", dev: "eth0" },
  { dst: "10.8.0.0/16", dev: "tun0" },
  { dst: "172.30.0.0/24", dev: "banger0" },
]);
const HOST_ADDRS = JSON.stringify([
  { ifname: "lo", addr_info: [{ family: "inet", local: "127.0.0.1", prefixlen: 8 }] },
  { ifname: "eth0", addr_info: [{ family: "inet", local: "192.168.5.10", prefixlen: 24 }] },
  { ifname: "banger0", addr_info: [{ family: "inet", local: "172.30.0.1", prefixlen: 24 }] },
]);

function hostNetworks(): Scripted {
  return scriptedRunner(["ip"], (cmd, args) => {
    const a = args.join(" ");
    if (a === "-j -4 route show") return { stdout: HOST_ROUTES };
    if (a === "-j -4 addr show") return { stdout: HOST_ADDRS };
    return { code: 1 };
  });
}

test("a pin that overlaps a network the host has on another interface is refused at start", async () => {
  const host = hostNetworks();
  // Its own bridge already carrying the subnet (a restart) is fine.
  await checkPinAgainstHost(host.runner, makePin("banger0", "172.30.0.0/24"));
  await checkPinAgainstHost(host.runner, makePin("banger1", "172.30.1.0/24"));
  await assert.rejects(
    checkPinAgainstHost(host.runner, makePin("banger1", "10.8.3.0/24")),
    /subnet 10\.8\.3\.0\/24 overlaps a network this host already uses \(route 10\.8\.0\.0\/16 via tun0\)/,
  );
  await assert.rejects(
    checkPinAgainstHost(host.runner, makePin("banger1", "192.168.0.0/16")),
    /address 192\.168\.5\.10\/24 on eth0/,
  );
  // Another banger bridge's subnet is another interface's network too.
  await assert.rejects(
    checkPinAgainstHost(host.runner, makePin("banger1", "172.30.0.0/23")),
    /route 172\.30\.0\.0\/24 via banger0/,
  );
  assert.ok(
    host.calls.every((c) => / show$/.test(c)),
    "it only reads",
  );
});

test("no tap may squat on a bridge name, and a bridge name held by a non-bridge is not used", async () => {
  const s = scriptedRunner(["ip"], (cmd, args) => {
    const a = args.join(" ");
    if (a === "-j -d link show dev banger-p")
      return { stdout: '[{"ifname":"banger-p","linkinfo":{"info_kind":"tun"}}]' };
    return { code: 1 };
  });
  const ops = rootOps(s.runner, PIN_P);
  // Another user's future bridge, made a tap of the served user's: their gateway would land on it.
  await assert.rejects(ops.createTap("banger-other", "banger-p", 1000), /taps are named bg-/);
  await assert.rejects(
    ops.ensureBridge("banger-p", "172.31.66.1/24"),
    /refusing to use "banger-p" as banger's bridge: it exists and is not a bridge \(tun\)/,
  );
  assert.deepEqual(s.calls, ["ip -j -d link show dev banger-p"], "only asked");
});
