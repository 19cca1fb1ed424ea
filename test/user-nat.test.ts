import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { guestFrameAllowed, hostIpv4Addresses } from "../src/net/frame-filter.js";
import { FrameReader, frameBytes } from "../src/net/netrelay.js";
import { startUserNat, stopUserNat, userNatRunning } from "../src/net/user-nat.js";
import { createCommandRunner } from "../src/system/runner.js";
import { ethFrame, fakeGuest, GUEST_MAC, synFrame } from "./helpers/frames.js";
import { outsideWorld, type OutsideWorld } from "./helpers/outside-world.js";

const GUEST = "10.0.2.15";
const isRoot = process.getuid?.() === 0;

let dir: string;
let hostServer: net.Server;
let hostPort: number;
let accepted = 0;
let world: OutsideWorld | null = null;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-usernat-"));
  // On 0.0.0.0: reachable through loopback, "this host" and every host address alike.
  hostServer = net.createServer((c) => {
    accepted++;
    c.on("error", () => {});
    c.end();
  });
  await new Promise<void>((r) => hostServer.listen(0, "0.0.0.0", r));
  hostPort = (hostServer.address() as net.AddressInfo).port;
  if (isRoot) world = await outsideWorld();
});
after(async () => {
  hostServer?.close();
  await world?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

test("the filter lets ARP and outside IPv4 through, and nothing addressed to the host", () => {
  const host = new Set(["192.0.2.2"]);
  assert.equal(guestFrameAllowed(ethFrame(0x0806, Buffer.alloc(28)), host), true);
  assert.equal(guestFrameAllowed(synFrame(GUEST, "198.51.100.2", 1, 80), host), true);
  assert.equal(
    guestFrameAllowed(synFrame(GUEST, "10.0.2.2", 1, 80), host),
    true,
    "gateway: passt sends it out, unmapped",
  );
  for (const dst of ["127.0.0.1", "127.1.2.3", "0.0.0.0", "0.1.2.3", "192.0.2.2"])
    assert.equal(guestFrameAllowed(synFrame(GUEST, dst, 1, 80), host), false, dst);
  assert.equal(guestFrameAllowed(ethFrame(0x86dd, Buffer.alloc(40)), host), false, "IPv6");
  assert.equal(guestFrameAllowed(ethFrame(0x8100, Buffer.alloc(40)), host), false, "VLAN tag");
  assert.equal(guestFrameAllowed(Buffer.alloc(10), host), false, "runt");
  assert.equal(guestFrameAllowed(ethFrame(0x0800, Buffer.alloc(4)), host), false, "short IPv4");
});

test("the host's addresses come from the kernel's local routes, interfaces without carrier included", () => {
  const trie = [
    "Local:",
    "  +-- 0.0.0.0/0 3 0 5",
    "     |-- 10.9.8.7",
    "        /32 host LOCAL",
    "     |-- 10.9.8.255",
    "        /32 link BROADCAST",
    "     +-- 172.30.0.0/24 2 0 2",
    "        |-- 172.30.0.1",
    "           /32 host LOCAL",
  ].join("\n");
  const got = hostIpv4Addresses(trie);
  assert.ok(got.has("10.9.8.7") && got.has("172.30.0.1"));
  assert.ok(!got.has("10.9.8.255"));
});

test("frames split across reads or packed together come out whole; an absurd length ends it", () => {
  const out: Buffer[] = [];
  let bad = 0;
  const r = new FrameReader(
    (f) => out.push(Buffer.from(f)),
    () => bad++,
  );
  const a = frameBytes(Buffer.from("first")),
    b = frameBytes(Buffer.from("second"));
  const all = Buffer.concat([a, b]);
  r.push(all.subarray(0, 3));
  r.push(all.subarray(3, 12));
  r.push(all.subarray(12));
  assert.deepEqual(out.map(String), ["first", "second"]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(1 << 30);
  r.push(len);
  assert.equal(bad, 1);
});

async function settle(ms = 1500) {
  await new Promise((r) => setTimeout(r, ms));
}

/** Polls, bounded, for something that should happen (the machine may be busy). */
async function eventually(ok: () => boolean, ms = 8000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  return ok();
}

test("a root guest's forged frames reach neither the host's loopback nor its addresses; the outside world answers", async () => {
  const vm = path.join(dir, "vm1");
  await fs.mkdir(vm);
  const h = await startUserNat({ dir: vm, sshPort: 0, runner: createCommandRunner() }).catch(
    (err: unknown) => {
      throw err;
    },
  );
  try {
    assert.ok(await userNatRunning(h, vm));
    const guest = await fakeGuest(h.socket);
    const targets = ["127.0.0.1", "127.0.0.2", "0.0.0.0", "10.0.2.2", ...hostIpv4Addresses()];
    accepted = 0;
    let sport = 40000;
    for (const dst of targets) guest.send(synFrame(GUEST, dst, sport++, hostPort));
    if (world) guest.send(synFrame(GUEST, world.address, sport++, world.port));
    await settle();
    assert.equal(accepted, 0, `host server reached from the guest (${targets.join(", ")})`);
    const egress = `${world?.address}:${world?.port}`;
    if (world) assert.ok(await eventually(() => guest.synAcksFrom.has(egress)), "egress");
    guest.close();
  } finally {
    await stopUserNat(h, vm);
  }
  assert.equal(await userNatRunning(h, vm), false);
  assert.deepEqual(await fs.readdir(vm).then((f) => f.filter((n) => n.endsWith(".sock"))), []);
});

test("the SSH forward reaches a guest that never spoke first (the filter announces it)", async () => {
  const vm = path.join(dir, "vm-ssh");
  await fs.mkdir(vm);
  const port = await new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
  const h = await startUserNat({ dir: vm, sshPort: port, runner: createCommandRunner() });
  try {
    const guest = await fakeGuest(h.socket);
    // passt binds the forward once it has its client: dial until it answers (bounded).
    const clients: net.Socket[] = [];
    const dial = setInterval(() => {
      const c = net.createConnection(port, "127.0.0.1");
      c.on("error", () => {});
      clients.push(c);
    }, 300);
    const seen = await eventually(() => guest.tcpTo.size > 0);
    clearInterval(dial);
    for (const c of clients) c.destroy();
    assert.ok(seen, "a SYN toward the guest's port 22");
    assert.deepEqual([...guest.tcpTo], [GUEST_MAC.toString("hex")], "unicast to the guest's MAC");
    guest.close();
  } finally {
    await stopUserNat(h, vm);
  }
});

test("why the filter exists: passt alone (--no-map-gw) connects a forged 127.0.0.1 to the host", async () => {
  // The same passt banger runs, reached directly instead of through the filter.
  const vm = path.join(dir, "vm-direct");
  await fs.mkdir(vm);
  const h = await startUserNat({
    dir: vm,
    sshPort: 0,
    runner: createCommandRunner(),
    // A "filter" that lets everything through: node's own stream pass-through.
    relay: {
      cmd: process.execPath,
      args: [
        "-e",
        'const n=require("net"),[l,u]=process.argv.slice(1);n.createServer(s=>{const c=n.createConnection(u);s.pipe(c);c.pipe(s)}).listen(l)',
      ],
    },
  });
  try {
    const guest = await fakeGuest(h.socket);
    accepted = 0;
    guest.send(synFrame(GUEST, "127.0.0.1", 41000, hostPort));
    assert.ok(await eventually(() => accepted > 0), "passt reached the host's loopback");
    guest.close();
  } finally {
    await stopUserNat(h, vm);
  }
});

test("start-up failures leave no helper and say what to do", async () => {
  const vm = path.join(dir, "vm-fail");
  await fs.mkdir(vm);
  const noPasst = { ...createCommandRunner(), which: async () => null };
  await assert.rejects(
    startUserNat({ dir: vm, sshPort: 0, runner: noPasst }),
    (err: Error & { hint?: string }) =>
      /needs passt/.test(err.message) && /apt-get install passt/.test(err.hint ?? ""),
  );
  await assert.rejects(
    startUserNat({
      dir: vm,
      sshPort: 0,
      runner: createCommandRunner(),
      relay: { cmd: "/bin/false", args: [] },
    }),
    /network filter did not start/,
  );
  const ps = await createCommandRunner().run("ps", ["-eo", "args"]);
  assert.ok(!ps.stdout.includes(vm), `a helper naming ${vm} is still running`);
  assert.deepEqual(await fs.readdir(vm).then((f) => f.filter((n) => n.endsWith(".sock"))), []);
});
