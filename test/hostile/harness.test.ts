import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test, type TestContext } from "node:test";
import { promisify } from "node:util";
import { natTable } from "../../src/net/privileged.js";
import { hostileDaemon, leftovers, runTable, type HostileDaemon } from "./harness.js";

const run = promisify(execFile);

// The harness itself must catch what it exists to catch, or every table built on it is hollow.
let daemon: HostileDaemon;
before(async () => {
  daemon = await hostileDaemon();
});
after(async () => {
  await daemon?.close();
});

test("harness: a row that leaves a file behind fails", async () => {
  const stray = `${daemon.home.home}/stray`;
  await assert.rejects(
    runTable(
      [{ name: "leaves a file", input: stray, expect: null }],
      async (file) => {
        const fs = await import("node:fs/promises");
        await fs.writeFile(file, "x");
      },
      { daemon, roots: [daemon.home.home] },
    ),
    /left behind \(files\).*stray/,
  );
});

test("harness: an accepted input that should have failed fails the row", async () => {
  await assert.rejects(
    runTable([{ name: "accepted", input: 1, expect: /nope/ }], async () => {}, { daemon }),
    /was accepted/,
  );
});

test("harness: an error that blames banger fails the row", async () => {
  await assert.rejects(
    runTable(
      [{ name: "bug", input: 1, expect: /x/ }],
      async () => {
        throw new Error("x: internal error (a bug in banger)");
      },
      { daemon },
    ),
    /reported as a bug/,
  );
});

test("harness: the daemon answers ping, and a clean snapshot is stable", async () => {
  await daemon.assertAlive();
  const a = await leftovers([daemon.home.home]);
  const b = await leftovers([daemon.home.home]);
  assert.deepEqual(a, b);
});

test("harness: a row that leaves a staging dir in the table's temp dir fails", async () => {
  await assert.rejects(
    runTable(
      [{ name: "stages", input: 1, expect: null }],
      () => fs.mkdtemp(path.join(os.tmpdir(), "banger-work-")),
      { daemon },
    ),
    /left behind \(tmp\).*banger-table-tmp-.*banger-work-/,
  );
});

/** Skips unless this test may make network devices (root, with /dev/net/tun). */
async function canMakeLinks(t: TestContext): Promise<boolean> {
  const tun = await fs.access("/dev/net/tun").then(
    () => true,
    () => false,
  );
  if (process.getuid?.() === 0 && tun) return true;
  t.skip("making taps and bridges needs root and /dev/net/tun");
  return false;
}

// A process that opens a tap and holds it (as QEMU would); `mark` goes on its command line.
const HOLD_TAP = `
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0002 | 0x1000))
print("held", flush=True)
time.sleep(600)
`;

test("harness: a tap held open by the table's process fails the row", async (t) => {
  if (!(await canMakeLinks(t))) return;
  const tap = `bg-h${randomBytes(4).toString("hex")}`;
  let holder: ChildProcess | undefined;
  const holdTap = () =>
    new Promise<void>((resolve, reject) => {
      holder = spawn("python3", ["-c", HOLD_TAP, tap, daemon.home.home], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      holder.stdout!.once("data", () => resolve());
      holder.once("exit", (code) => reject(new Error(`the tap holder exited ${code}`)));
    });
  try {
    await assert.rejects(
      runTable([{ name: "holds a tap", input: 1, expect: null }], holdTap, {
        daemon,
        roots: [daemon.home.home],
      }),
      (err: Error) => {
        assert.match(
          err.message,
          new RegExp(`left behind \\(links\\): ${tap} \\(held by ${holder!.pid}\\)`),
        );
        return true;
      },
    );
  } finally {
    holder?.kill("SIGKILL");
  }
});

test("harness: the table's bridge, a tap on it and its NAT table fail the row", async (t) => {
  if (!(await canMakeLinks(t))) return;
  const bridge = `bangerh${randomBytes(3).toString("hex")}`;
  const tap = `bg-h${randomBytes(4).toString("hex")}`;
  const table = natTable(bridge);
  const row = (name: string, make: () => Promise<void>) =>
    runTable([{ name, input: 1, expect: null }], make, { daemon, bridges: [bridge] });
  try {
    await assert.rejects(
      row("makes a bridge and a tap", async () => {
        await run("ip", ["link", "add", bridge, "type", "bridge"]);
        await run("ip", ["tuntap", "add", tap, "mode", "tap"]);
        await run("ip", ["link", "set", tap, "master", bridge]);
      }),
      new RegExp(`left behind \\(links\\): ${bridge}, ${tap} \\(on ${bridge}\\)`),
    );
    await run("ip", ["link", "del", tap]);
    await run("ip", ["link", "del", bridge]);
    await assert.rejects(
      row("makes a NAT table", () => run("nft", ["add", "table", "ip", table]).then(() => {})),
      new RegExp(`left behind \\(nftTables\\): ip ${table}`),
    );
  } finally {
    await run("ip", ["link", "del", tap]).catch(() => undefined);
    await run("ip", ["link", "del", bridge]).catch(() => undefined);
    await run("nft", ["delete", "table", "ip", table]).catch(() => undefined);
  }
});

test("harness: what other tests make meanwhile (taps, bridges, NAT, temp dirs) is not the table's", async (t) => {
  if (!(await canMakeLinks(t))) return;
  const bridge = `bangerh${randomBytes(3).toString("hex")}`;
  const tap = `bg-h${randomBytes(4).toString("hex")}`;
  const table = natTable(bridge);
  const staging = path.join(path.dirname(await fs.realpath(daemon.tmp)), `banger-work-${tap}`);
  try {
    await runTable(
      [{ name: "someone else's work", input: 1, expect: null }],
      async () => {
        await run("ip", ["link", "add", bridge, "type", "bridge"]);
        await run("ip", ["tuntap", "add", tap, "mode", "tap"]);
        await run("nft", ["add", "table", "ip", table]);
        await fs.mkdir(staging);
      },
      { daemon, roots: [daemon.home.home] },
    );
  } finally {
    await run("ip", ["link", "del", tap]).catch(() => undefined);
    await run("ip", ["link", "del", bridge]).catch(() => undefined);
    await run("nft", ["delete", "table", "ip", table]).catch(() => undefined);
    await fs.rm(staging, { recursive: true, force: true });
  }
});

test("harness: a daemon that cannot start leaves neither its home nor its TMPDIR", async () => {
  // The harness makes both under the test process's temp dir: point that at a private one.
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), "banger-harness-"));
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = tmp;
  try {
    // Node refuses an unknown option before bangerd runs a line: the start fails at once.
    await assert.rejects(hostileDaemon({ NODE_OPTIONS: "--no-such-node-option" }));
    assert.deepEqual(await fs.readdir(tmp), []);
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
    await fs.rm(tmp, { recursive: true, force: true });
  }
});
