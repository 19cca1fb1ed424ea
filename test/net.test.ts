import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import dgram from "node:dgram";
import fs from "node:fs/promises";
import { promisify } from "node:util";
import { test } from "node:test";
import dnsPacket from "dns-packet";
import { allocateAddress, gatewayOf, macFor, parseSubnet } from "../src/net/addresses.js";
import { DnsResponder } from "../src/net/dns.js";
import { BridgeNetwork } from "../src/net/network.js";
import { makePin } from "../src/net/pin.js";
import { createRootOps } from "../src/net/privileged.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { fakeOps, type FakeOps } from "./helpers/fake-ops.js";
import { tempLayout } from "./helpers/temp-home.js";

test("addresses: gateway .1, lowest free guest address, stable MACs", () => {
  const s = parseSubnet("172.30.0.0/24");
  assert.equal(gatewayOf(s), "172.30.0.1");
  assert.equal(allocateAddress(s, new Set()), "172.30.0.2");
  assert.equal(allocateAddress(s, new Set(["172.30.0.2", "172.30.0.3"])), "172.30.0.4");
  const tiny = parseSubnet("10.9.0.8/30");
  assert.equal(allocateAddress(tiny, new Set()), "10.9.0.10");
  assert.throws(() => allocateAddress(tiny, new Set(["10.9.0.10"])), /no free address left/);
  assert.match(macFor("a1b2c3d4e5f6"), /^52:54:a1:b2:c3:d4$/);
});

async function ask(
  port: number,
  name: string,
  type: "A" | "AAAA" = "A",
): Promise<dnsPacket.Packet> {
  const socket = dgram.createSocket("udp4");
  try {
    const reply = new Promise<Buffer>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no DNS answer within 2s")), 2000);
      socket.once("message", (m) => {
        clearTimeout(timer);
        resolve(m);
      });
    });
    socket.send(
      dnsPacket.encode({
        type: "query",
        id: 7,
        flags: dnsPacket.RECURSION_DESIRED,
        questions: [{ type, name }],
      }),
      port,
      "127.0.0.1",
    );
    return dnsPacket.decode(await reply);
  } finally {
    socket.close();
  }
}

/** dns-packet decodes the response code, though its types do not say so. */
const rcode = (p: dnsPacket.Packet) => (p as { rcode?: string }).rcode;

test("DNS responder: A for known .vm names, NXDOMAIN for unknown, REFUSED outside .vm", async () => {
  const responder = new DnsResponder((name) => (name === "dev" ? "172.30.0.2" : null));
  const port = await responder.start("127.0.0.1", 0);
  try {
    const known = await ask(port, "dev.vm");
    assert.equal(rcode(known), "NOERROR");
    assert.equal(known.id, 7);
    assert.deepEqual(
      known.answers?.map((a) => [a.name, (a as { data: unknown }).data]),
      [["dev.vm", "172.30.0.2"]],
    );
    assert.equal(
      (await ask(port, "DEV.VM.")).answers?.length,
      1,
      "case and trailing dot do not matter",
    );
    assert.equal((await ask(port, "dev.vm", "AAAA")).answers?.length, 0);
    assert.equal(rcode(await ask(port, "ghost.vm")), "NXDOMAIN");
    assert.equal(rcode(await ask(port, "example.com")), "REFUSED");
  } finally {
    await responder.stop();
  }
});

test("privileged ops refuse devices without banger's prefix", async () => {
  const ops = createRootOps(createCommandRunner(), {
    pin: makePin("banger0", "172.30.0.0/24"),
    onlyForUid: 0,
  });
  await assert.rejects(ops.deleteTap("eth0"), /not one of banger's/);
  await assert.rejects(ops.ensureBridge("docker0", "10.0.0.1/24"), /not one of banger's/);
  await assert.rejects(ops.createTap("bg-x", "br0", 0), /not one of banger's/);
});

/** Bridge networking on banger9 / 172.31.9.0/24 without a tap pool, over fake privileged ops. */
function unpooledNetwork(ops: FakeOps, store: Store): BridgeNetwork {
  return new BridgeNetwork(
    ops,
    { bridge: "banger9", subnet: "172.31.9.0/24", dnsPort: 53, tapPoolSize: 0, helperSocket: null },
    store,
    0,
  );
}

test("parallel starts get distinct addresses; a stopped VM keeps its own", async () => {
  const home = await tempLayout();
  const store = Store.open(home.layout.dbFile);
  const ops = fakeOps();
  ops.createDelayMs = 20;
  const calls = ops.calls;
  try {
    const net = unpooledNetwork(ops, store);
    const [a, b] = await Promise.all([
      net.attach({ id: "aaaaaaaaaaaaaa", ip: null, nat: false }),
      net.attach({ id: "bbbbbbbbbbbbbb", ip: null, nat: true }),
    ]);
    assert.notEqual(a.ip, b.ip);
    assert.deepEqual([a.gateway, a.prefix], ["172.31.9.1", 24]);
    assert.ok(
      calls.includes("ensureNat 172.31.9.0/24 banger9"),
      "NAT set up for the VM that asked",
    );
    const again = await net.attach({ id: "aaaaaaaaaaaaaa", ip: a.ip, nat: false });
    assert.equal(again.ip, a.ip, "a VM keeps its address");
    await net.detach(b.tap);
    assert.ok(calls.includes(`deleteTap ${b.tap}`), "with no pool, a returned tap is removed");
  } finally {
    store.close();
    await home.cleanup();
  }
});

test("a start whose NAT set-up fails gives its tap and address back", async () => {
  const home = await tempLayout();
  const store = Store.open(home.layout.dbFile);
  const ops = fakeOps();
  ops.ensureNat = async () => {
    throw new Error("nft: no such file or directory");
  };
  try {
    const net = unpooledNetwork(ops, store);
    await assert.rejects(net.attach({ id: "aaaaaaaaaaaaaa", ip: null, nat: true }), /nft/);
    assert.equal(ops.taps.size, 0, "no tap is left behind");
    const next = await net.attach({ id: "bbbbbbbbbbbbbb", ip: null, nat: false });
    assert.equal(next.ip, "172.31.9.2", "the address was given back");
  } finally {
    store.close();
    await home.cleanup();
  }
});

test("removeBridge (real links): refused while a tap is attached, then removes only a bridge", async (t) => {
  const tun = await fs.open("/dev/net/tun", "r+").then(
    (h) => h.close().then(() => true),
    () => false,
  );
  if (process.getuid?.() !== 0 || !tun) return t.skip("needs root and /dev/net/tun");
  const ip = promisify(execFile);
  // Own bridge and quarter of 172.31.77.0/24: other test files run at the same time.
  const bridge = "bangerswr";
  const tap = "bg-swrmbr00001";
  const rm = async () => {
    for (const link of [tap, bridge]) await ip("ip", ["link", "del", link]).catch(() => undefined);
  };
  await rm();
  try {
    const ops = createRootOps(createCommandRunner(), {
      pin: makePin(bridge, "172.31.77.128/26"),
      onlyForUid: 0,
    });
    await ops.ensureBridge(bridge, "172.31.77.129/26");
    await ops.createTap(tap, bridge, 0);
    await assert.rejects(
      ops.removeBridge!(bridge),
      /refusing to remove bridge "bangerswr": bg-swrmbr00001 still attached/,
    );
    await ip("ip", ["link", "show", "dev", bridge]);
    await ops.deleteTap(tap);
    await ops.removeBridge!(bridge);
    await assert.rejects(ip("ip", ["link", "show", "dev", bridge]), "the bridge is gone");
    await ops.removeBridge!(bridge); // already gone: fine
    await assert.rejects(ops.removeBridge!("banger0"), /serves only bridge bangerswr/);
    // A device of another kind under the bridge's name is never removed.
    await ip("ip", ["tuntap", "add", "dev", bridge, "mode", "tap"]);
    await assert.rejects(ops.removeBridge!(bridge), /not a bridge/);
  } finally {
    await rm();
  }
});
