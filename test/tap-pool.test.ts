import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import { test } from "node:test";
import { promisify } from "node:util";
import { makePin } from "../src/net/pin.js";
import { createRootOps, type PrivilegedOps } from "../src/net/privileged.js";
import { TapPool } from "../src/net/tap-pool.js";
import { createCommandRunner } from "../src/system/runner.js";
import { fakeOps, type FakeOps } from "./helpers/fake-ops.js";

const BRIDGE = "banger-p";
const ME = 1000;

function pool(ops: FakeOps, size: number, logged: string[] = []): TapPool {
  let n = 0;
  return new TapPool({
    ops,
    bridge: BRIDGE,
    ownerUid: ME,
    size,
    newName: () => `bg-t${String(++n).padStart(4, "0")}`,
    log: {
      error: (obj, msg) => logged.push(`${msg}: ${String((obj as { err?: unknown }).err ?? "")}`),
    },
  });
}

test("tap pool: fills at start-up, take hands out an idle tap and refills behind it", async () => {
  const ops = fakeOps();
  const p = pool(ops, 2);
  await p.init();
  await p.settled();
  assert.deepEqual(p.idleTaps, ["bg-t0001", "bg-t0002"]);
  const tap = await p.take();
  assert.equal(tap, "bg-t0001", "an idle tap, not a new one");
  await p.settled();
  assert.deepEqual(p.idleTaps, ["bg-t0002", "bg-t0003"], "refilled in the background");
  assert.ok(ops.taps.has(tap), "the taken tap exists");
  for (const t of ops.taps.values()) assert.deepEqual(t, { bridge: BRIDGE, ownerUid: ME });
});

test("tap pool: a returned tap is kept when there is room, removed when the pool is full", async () => {
  const ops = fakeOps();
  const p = pool(ops, 1);
  await p.init();
  await p.settled();
  const a = await p.take();
  const b = await p.take();
  await p.settled();
  assert.equal(p.idleTaps.length, 1);
  await p.give(a);
  assert.ok(!p.idleTaps.includes(a) && !ops.taps.has(a), "pool full: the returned tap is removed");
  const idle = await p.take();
  await p.give(b);
  assert.ok(p.idleTaps.includes(b) && ops.taps.has(b), "room: the returned tap is kept");
  assert.ok(ops.taps.has(idle));
});

test("tap pool: a tap that failed a VM start is removed, not reused", async () => {
  const ops = fakeOps();
  const p = pool(ops, 2);
  await p.init();
  await p.settled();
  const bad = await p.take();
  await p.discard(bad);
  await p.settled();
  assert.ok(!ops.taps.has(bad) && !p.idleTaps.includes(bad));
  assert.equal(p.idleTaps.length, 2);
});

test("tap pool: size 0 creates on demand and removes on return", async () => {
  const ops = fakeOps();
  const p = pool(ops, 0);
  await p.init();
  await p.settled();
  assert.equal(ops.taps.size, 0);
  const tap = await p.take();
  await p.settled();
  assert.deepEqual([...ops.taps.keys()], [tap]);
  await p.give(tap);
  assert.equal(ops.taps.size, 0);
});

test("tap pool: take while the pool is empty or refilling never hands out one tap twice", async () => {
  const ops = fakeOps();
  ops.createDelayMs = 10;
  const p = pool(ops, 2);
  await p.init();
  const taps = await Promise.all([p.take(), p.take(), p.take(), p.take()]);
  assert.equal(new Set(taps).size, 4, taps.join(" "));
  await p.settled();
  assert.equal(p.idleTaps.length, 2);
  for (const t of taps) assert.ok(!p.idleTaps.includes(t));
});

test("tap pool: adopted VMs keep their taps; leftovers are reused when ours, else removed", async () => {
  const ops = fakeOps();
  // What a crashed daemon left: a running VM's tap, two idle ones of ours, one of another uid.
  ops.taps.set("bg-running0001", { bridge: BRIDGE, ownerUid: ME });
  ops.taps.set("bg-idle0000001", { bridge: BRIDGE, ownerUid: ME });
  ops.taps.set("bg-idle0000002", { bridge: BRIDGE, ownerUid: ME });
  ops.taps.set("bg-stranger001", { bridge: BRIDGE, ownerUid: 4242 });
  ops.taps.set("bg-otherbridge", { bridge: "banger0", ownerUid: ME });
  const p = pool(ops, 1);
  p.markInUse("bg-running0001");
  await p.init();
  await p.settled();
  assert.deepEqual(p.idleTaps, ["bg-idle0000001"], "one reused: the pool holds one");
  assert.deepEqual(
    [...ops.taps.keys()].sort(),
    ["bg-idle0000001", "bg-otherbridge", "bg-running0001"],
    "the surplus and the stranger's are removed; another bridge is not ours to judge",
  );
  assert.ok(!ops.calls.some((c) => c.startsWith("createTap")), "no new tap needed");
  const taken = await p.take();
  assert.equal(taken, "bg-idle0000001");
  assert.notEqual(taken, "bg-running0001");
});

test("tap pool: drain removes idle taps only, and nothing refills afterwards", async () => {
  const ops = fakeOps();
  const p = pool(ops, 2);
  await p.init();
  const inUse = await p.take();
  await p.drain();
  assert.deepEqual([...ops.taps.keys()], [inUse], "the running VM's tap stays");
  assert.deepEqual(p.idleTaps, []);
  p.refill();
  await p.settled();
  assert.deepEqual([...ops.taps.keys()], [inUse]);
  await p.give(inUse);
  assert.equal(ops.taps.size, 0, "after shutdown a returned tap is removed");
});

test("tap pool: a failing refill is logged and the next take creates on demand", async () => {
  const ops = fakeOps();
  ops.failCreates = 1;
  const logged: string[] = [];
  const p = pool(ops, 1, logged);
  await p.init();
  await p.settled();
  assert.deepEqual(p.idleTaps, []);
  assert.deepEqual(logged, ["could not pre-create a tap: Error: no more taps today"]);
  const tap = await p.take();
  assert.ok(ops.taps.has(tap));
  await p.settled();
  assert.equal(p.idleTaps.length, 1);
});

test("tap pool: a tap given back for a VM that did not survive a reboot is not handed out", async () => {
  // Reconcile gives back the taps of VMs whose QEMU is gone; after a host reboot those taps
  // are gone too. init() must not keep them idle.
  const ops = fakeOps();
  const p = pool(ops, 2);
  await p.give("bg-deadbeef0000");
  await p.init();
  await p.settled();
  assert.ok(!p.idleTaps.includes("bg-deadbeef0000"));
  const tap = await p.take();
  assert.ok(ops.taps.has(tap), "the tap handed out exists");
});

const ip = promisify(execFile);
// Attaches to an existing tap (TUNSETIFF, IFF_TAP | IFF_NO_PI) and holds it, as QEMU would.
const HOLD_TAP = [
  "import fcntl, os, struct, sys, time",
  "fd = os.open('/dev/net/tun', os.O_RDWR)",
  "fcntl.ioctl(fd, 0x400454CA, struct.pack('16sH', sys.argv[1].encode(), 0x0002 | 0x1000))",
  "print('held', flush=True)",
  "time.sleep(120)",
].join("\n");
const canMakeTaps = async () =>
  process.getuid?.() === 0 &&
  (await fs.open("/dev/net/tun", "r+").then(
    (h) => h.close().then(() => true),
    () => false,
  ));

test(
  "tap pool (real taps): our bg- taps on no bridge are swept at start; another bridge's, another uid's and one attached in the grace period stay",
  { timeout: 60_000 },
  async (t) => {
    if (!(await canMakeTaps())) return t.skip("needs root and /dev/net/tun to make real taps");
    const bridge = "bangerswp";
    const other = "bangerswq";
    const made = [
      "bg-swloose0001",
      "bg-swlate00001",
      "bg-swother0001",
      "bg-swstrange01",
      "bg-swheld00001",
    ];
    let holder: ChildProcess | null = null;
    const rm = async () => {
      holder?.kill("SIGKILL");
      for (const link of [...made, other, bridge])
        await ip("ip", ["link", "del", link]).catch(() => undefined);
    };
    await rm();
    try {
      const real = createRootOps(createCommandRunner(), {
        pin: makePin(bridge, "172.31.77.64/26"),
        onlyForUid: 0,
      });
      await real.ensureBridge(bridge, "172.31.77.65/26");
      // Another daemon's bridge, with its tap: never ours to take.
      await ip("ip", ["link", "add", other, "type", "bridge"]);
      const tap = async (name: string, uid: number) =>
        ip("ip", ["tuntap", "add", "dev", name, "mode", "tap", "user", String(uid)]);
      await tap("bg-swother0001", 0);
      await ip("ip", ["link", "set", "bg-swother0001", "master", other]);
      // Made and never attached (a daemon killed between the two steps), ours and a stranger's.
      await tap("bg-swloose0001", 0);
      await tap("bg-swstrange01", 4242);
      // On no bridge but held open by a process (its carrier is up): someone uses it.
      await tap("bg-swheld00001", 0);
      holder = spawn("python3", ["-c", HOLD_TAP, "bg-swheld00001"], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      await new Promise<void>((resolve, reject) => {
        holder!.stdout!.once("data", () => resolve());
        holder!.once("exit", (code) => reject(new Error(`the tap holder exited (${code})`)));
      });
      await ip("ip", ["link", "set", "bg-swheld00001", "up"]);
      assert.match(
        (await ip("ip", ["-o", "link", "show", "bg-swheld00001"])).stdout,
        /LOWER_UP/,
        "a held tap has its carrier up",
      );
      // Off every bridge at the first look, attached (by another daemon) before the second.
      await tap("bg-swlate00001", 0);
      let looks = 0;
      let firstLook!: () => void;
      const looked = new Promise<void>((r) => (firstLook = r));
      const ops: PrivilegedOps = {
        ...real,
        listDetachedTaps: async () => {
          const found = await real.listDetachedTaps!();
          if (++looks === 1) firstLook();
          return found;
        },
      };
      const p = new TapPool({ ops, bridge, ownerUid: 0, size: 1, detachedGraceMs: 500 });
      await p.init();
      await Promise.race([
        looked,
        p.settled().then(() => assert.fail("the pool never looked for taps on no bridge")),
      ]);
      await ip("ip", ["link", "set", "bg-swlate00001", "master", other]);
      await p.settled();
      const links = (await ip("ip", ["-o", "link", "show"])).stdout;
      const has = (name: string) => new RegExp(`^\\d+: ${name}[:@]`, "m").test(links);
      assert.equal(has("bg-swloose0001"), false, "our tap on no bridge was removed");
      assert.ok(has("bg-swother0001"), "a tap on another bridge stays");
      assert.ok(has("bg-swstrange01"), "another uid's tap stays");
      assert.ok(has("bg-swlate00001"), "a tap attached during the grace period stays");
      assert.ok(has("bg-swheld00001"), "a tap a process holds open stays");
      assert.equal(looks, 2, "looked twice, a grace period apart");
      assert.equal(p.idleTaps.length, 1, "the pool filled as usual");
      made.push(...p.idleTaps);
      await p.drain();
    } finally {
      await rm();
    }
  },
);
