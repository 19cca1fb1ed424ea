// VmService.start's failure paths over a real store, real kernel service, real ssh and passt,
// with a scripted VMM (test/e2e/vm-failures.test.ts boots real QEMU for the same paths) and,
// for bridge mode, the real BridgeNetwork and tap pool over fake privileged ops.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { VmService } from "../src/vm/service.js";
import { BridgeNetwork } from "../src/net/network.js";
import { Store, type VmRow } from "../src/store/store.js";
import { createCommandRunner, type CommandRunner } from "../src/system/runner.js";
import type { Driver, VmHandles, VmSpec } from "../src/vmm/driver.js";
import { qemuDiskAndFiles } from "./helpers/fake-driver.js";
import { fakeOps, type FakeOps } from "./helpers/fake-ops.js";
import { killProcessesNaming, processesNaming } from "./helpers/procs.js";
import { imageServices, noOci } from "./helpers/services.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";
import { vmRow } from "./helpers/vm-row.js";

interface ScriptedDriver extends Driver {
  /** What the VMM is doing now, as status() reports it. */
  alive: boolean;
  calls: string[];
  /** Tells the daemon a VMM may have exited, as QEMU's console end does (Driver.onExit). */
  exited(): void;
}

/**
 * A VMM that `start`s as told: throws `startError`, or "runs" (alive unless `exitsAtOnce`),
 * with SSH on 127.0.0.1:`sshPort`. Its pid is this process, so nothing real is ever signalled.
 */
function scriptedDriver(opts: {
  startError?: Error;
  exitsAtOnce?: boolean;
  sshPort?: number;
  /** What the guest prints on its console once started. */
  console?: string;
}): ScriptedDriver {
  const listeners = new Set<() => void>();
  const d: ScriptedDriver = {
    name: "qemu",
    ...qemuDiskAndFiles(createCommandRunner()),
    alive: false,
    calls: [],
    exited: () => listeners.forEach((l) => l()),
    onExit(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async start(spec: VmSpec): Promise<VmHandles> {
      d.calls.push("start");
      if (opts.startError) throw opts.startError;
      if (opts.console) await fs.appendFile(path.join(spec.dir, "console.log"), opts.console);
      d.alive = !opts.exitsAtOnce;
      return {
        vmm: "qemu",
        pid: process.pid,
        controlSocket: path.join(spec.dir, "qmp.sock"),
        consoleLog: path.join(spec.dir, "console.log"),
        sshHost: "127.0.0.1",
        sshPort: opts.sshPort ?? 1,
        tap: spec.network.mode === "tap" ? spec.network.tap : null,
      };
    },
    async stop() {
      d.calls.push("stop");
      d.alive = false;
    },
    async kill() {
      d.calls.push("kill");
      d.alive = false;
    },
    async killStray(dir: string) {
      d.calls.push(`killStray ${path.basename(dir)}`);
      return false;
    },
    async status() {
      return d.alive ? "running" : "stopped";
    },
    release() {
      d.calls.push("release");
    },
    async describe() {
      return "scripted";
    },
  };
  return d;
}

/** A TCP listener that accepts and never says a word (no SSH banner). */
async function silentListener(): Promise<{ port: number; accepted: () => number; close(): void }> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((s) => {
    accepted++;
    sockets.add(s);
    s.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => accepted,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

interface Fixture {
  home: TempLayout;
  store: Store;
  vms: VmService;
  ops: FakeOps;
  row: VmRow;
  dir: string;
  /** The time limit of each ssh banger ran, in order. */
  sshTimeouts: number[];
  /** The cancellation signals banger handed to those ssh runs. */
  sshSignals: AbortSignal[];
  done(): Promise<void>;
}

/**
 * One VM row ("created", or as `state` says) with its directory, a real kernel in the store
 * (a junk file: the scripted VMM never reads it), and bridge networking over fake ops when
 * `bridge`, else user-mode networking (`nat` starts the real passt and frame filter).
 */
async function fixture(
  driver: Driver,
  opts: {
    bridge: boolean;
    nat?: boolean;
    sshDeadlineMs?: number;
    state?: VmRow["state"];
    /** Runs when each ssh banger ran has returned. */
    afterSsh?: () => void;
  },
): Promise<Fixture> {
  const home = await tempLayout("banger-startfail-");
  const store = Store.open(home.layout.dbFile);
  const real = createCommandRunner();
  const sshTimeouts: number[] = [];
  const sshSignals: AbortSignal[] = [];
  // The real runner; what banger asks of each ssh (its time limit) is noted on the way.
  const runner: CommandRunner = {
    run: (cmd, args, o) => {
      if (cmd === "ssh") {
        sshTimeouts.push(o?.timeoutMs ?? Infinity);
        if (o?.signal) sshSignals.push(o.signal);
      }
      return real.run(cmd, args, o).finally(() => {
        if (cmd === "ssh") opts.afterSsh?.();
      });
    },
    which: (cmd) => real.which(cmd),
  };
  const { kernels, images } = imageServices(store, home.layout, { runner, oci: noOci });
  const kdir = path.join(home.home, "kernel");
  await fs.mkdir(kdir);
  await fs.writeFile(path.join(kdir, "vmlinuz"), randomBytes(4096));
  await kernels.import("junk", kdir);
  const ops = fakeOps();
  const network = opts.bridge
    ? new BridgeNetwork(
        ops,
        {
          bridge: "banger9",
          subnet: "172.31.9.0/24",
          dnsPort: 53,
          tapPoolSize: 0,
          helperSocket: null,
        },
        store,
        0,
      )
    : null;
  const vms = new VmService({
    store,
    layout: home.layout,
    runner,
    images,
    kernels,
    drivers: { qemu: driver },
    pickVmm: async () => "qemu",
    network,
    host: { cpus: 2, memoryBytes: 4 * 2 ** 30 },
    sshDeadlineMs: opts.sshDeadlineMs ?? 3000,
    stopDeadlineMs: 1000,
  });
  const row = vmRow({
    id: randomBytes(6).toString("hex"),
    name: "dev",
    kernelRef: "junk",
    state: opts.state ?? "created",
    nat: opts.nat ?? false,
  });
  store.insertVm(row);
  const dir = path.join(home.layout.vmsDir, row.id);
  await fs.mkdir(dir, { recursive: true });
  return {
    home,
    store,
    vms,
    ops,
    row,
    dir,
    sshTimeouts,
    sshSignals,
    done: async () => {
      try {
        await vms.kill("dev").catch(() => undefined);
      } finally {
        // A failed check must not leave passt or the filter running for this home.
        await killProcessesNaming(home.home);
        store.close();
        await home.cleanup();
      }
    },
  };
}

const exists = (file: string) =>
  fs.access(file).then(
    () => true,
    () => false,
  );

/** A row recorded as running with a tap, its handles written as a started VM's are. */
async function runningRow(f: Fixture): Promise<void> {
  await f.ops.createTap("bg-0123456789ab", "banger9", 0);
  const handles: VmHandles = {
    vmm: "qemu",
    pid: process.pid,
    controlSocket: path.join(f.dir, "qmp.sock"),
    consoleLog: path.join(f.dir, "console.log"),
    sshHost: "127.0.0.1",
    sshPort: 1,
    tap: "bg-0123456789ab",
  };
  await fs.writeFile(path.join(f.dir, "handles.json"), JSON.stringify(handles));
  f.store.updateVm(f.row.id, { teardownJson: JSON.stringify(handles) });
}

/** The VM has been released: stopped, tap given back, no handles. */
async function assertReleased(f: Fixture): Promise<void> {
  assert.equal(f.store.getVmByName("dev")?.state, "stopped");
  assert.equal(f.store.getVmByName("dev")?.teardownJson, null);
  assert.equal(await exists(path.join(f.dir, "handles.json")), false, "handles.json is left");
  assert.ok(f.ops.calls.includes("deleteTap bg-0123456789ab"), f.ops.calls.join("\n"));
}

async function rejection(p: Promise<unknown>): Promise<BangerError> {
  const err = await p.then(
    () => assert.fail("expected the start to fail"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof BangerError, `not a BangerError: ${String(err)}`);
  return err;
}

test("driver.start failing (bridge mode): the tap is removed and the row is not running", async () => {
  const driver = scriptedDriver({
    startError: new BangerError(ErrorCode.BootFailed, "qemu could not start VM dev: no"),
  });
  const f = await fixture(driver, { bridge: true });
  try {
    const err = await rejection(f.vms.start("dev"));
    assert.equal(err.code, ErrorCode.BootFailed);
    const created = f.ops.calls.filter((c) => c.startsWith("createTap "));
    assert.equal(created.length, 1, f.ops.calls.join("\n"));
    const tap = created[0]!.split(" ")[1]!;
    assert.ok(f.ops.calls.includes(`deleteTap ${tap}`), f.ops.calls.join("\n"));
    assert.equal(f.ops.taps.size, 0, "a tap is left");
    assert.equal(f.store.getVmByName("dev")?.state, "created");
    assert.equal(await exists(path.join(f.dir, "handles.json")), false);
  } finally {
    await f.done();
  }
});

test("driver.start failing (user NAT): the real passt and frame filter are stopped", async () => {
  const driver = scriptedDriver({
    startError: new BangerError(ErrorCode.BootFailed, "qemu could not start VM dev: no"),
  });
  const f = await fixture(driver, { bridge: false, nat: true });
  try {
    const err = await rejection(f.vms.start("dev"));
    assert.equal(err.code, ErrorCode.BootFailed);
    assert.deepEqual(driver.calls, ["start"]);
    assert.deepEqual(await processesNaming(f.dir), [], "passt or the filter is left");
    // They did run: their logs are there (an early exit would be a test that proves nothing).
    assert.ok(await exists(path.join(f.dir, "passt.log")), "passt never started");
    assert.equal(f.store.getVmByName("dev")?.state, "created");
    assert.equal(await exists(path.join(f.dir, "handles.json")), false);
  } finally {
    await f.done();
  }
});

test("a VMM that exits during the SSH wait: BootFailed naming vm logs, stopped, tap given back", async () => {
  const lines = Array.from({ length: 30 }, (_, i) => `[ ${i}] booting`);
  const driver = scriptedDriver({
    exitsAtOnce: true,
    console: `${lines.join("\n")}\nKernel panic - not syncing: \x1b[2J no root\n`,
  });
  const f = await fixture(driver, { bridge: true, sshDeadlineMs: 60_000 });
  try {
    await fs.writeFile(path.join(f.dir, "console.log"), "an earlier boot's own panic\n");
    const err = await rejection(f.vms.start("dev"));
    assert.equal(err.code, ErrorCode.BootFailed);
    assert.match(err.message, /VM dev stopped while booting/);
    // This boot's last 20 console lines, escaped and quoted, are in the error itself.
    const quoted = err.message.split("\n").filter((l) => l.startsWith("  | "));
    assert.equal(quoted.length, 20, err.message);
    assert.equal(quoted[0], "  | [ 11] booting");
    assert.equal(quoted.at(-1), "  | Kernel panic - not syncing: \\x1b[2J no root");
    assert.doesNotMatch(err.message, /\x1b|earlier boot/);
    assert.match(err.hint ?? "", /'banger vm logs dev'/);
    assert.equal(f.store.getVmByName("dev")?.state, "stopped");
    assert.equal(await exists(path.join(f.dir, "handles.json")), false);
    assert.equal(f.store.getVmByName("dev")?.teardownJson, null);
    assert.equal(f.ops.taps.size, 0, `a tap is left: ${[...f.ops.taps.keys()].join(" ")}`);
    assert.ok(driver.calls.includes("release"), "the console was not let go");
    // And it starts again from there.
    driver.alive = false;
    await rejection(f.vms.start("dev"));
    assert.equal(f.store.getVmByName("dev")?.state, "stopped");
  } finally {
    await f.done();
  }
});

test("SSH never answering (a silent listener): SshTimeout, the live VM is left running with its tap", async () => {
  const listener = await silentListener();
  const driver = scriptedDriver({
    sshPort: listener.port,
    console: "Welcome\nssh.service: masked, not started\n",
  });
  const f = await fixture(driver, { bridge: true, sshDeadlineMs: 3000 });
  try {
    const err = await rejection(f.vms.start("dev"));
    assert.equal(err.code, ErrorCode.SshTimeout);
    assert.match(err.message, /VM dev did not answer on SSH within 3s/);
    assert.match(
      err.message,
      /last lines:\n {2}\| Welcome\n {2}\| ssh\.service: masked, not started$/,
    );
    assert.match(err.hint ?? "", /left running for inspection: 'banger vm logs dev'/);
    assert.ok(listener.accepted() > 0, "ssh never reached the listener");
    // A probe stuck on the silent listener must not outlive the 3 s wait (ssh's own limit was 15 s).
    assert.ok(f.sshTimeouts.length > 0);
    assert.ok(
      f.sshTimeouts.every((ms) => ms <= 3000),
      `ssh probes outlive the wait: ${f.sshTimeouts.join(", ")} ms`,
    );
    assert.equal(f.store.getVmByName("dev")?.state, "running");
    assert.ok(await exists(path.join(f.dir, "handles.json")), "handles.json is gone");
    assert.equal(f.ops.taps.size, 1, "the live VM lost its tap");
    // The VMM dies later: the next start sees it, gives the old tap back and starts afresh.
    const [oldTap] = [...f.ops.taps.keys()];
    driver.alive = false;
    listener.close();
    await rejection(f.vms.start("dev"));
    assert.ok(f.ops.calls.includes(`deleteTap ${oldTap}`), f.ops.calls.join("\n"));
  } finally {
    listener.close();
    await f.done();
  }
});

test("two starts at once: the second sees the first's VMM (the row as it is under the lock), never a second VMM", async () => {
  const listener = await silentListener();
  const driver = scriptedDriver({ sshPort: listener.port });
  const f = await fixture(driver, { bridge: true, sshDeadlineMs: 1000 });
  try {
    const [first, second] = await Promise.allSettled([f.vms.start("dev"), f.vms.start("dev")]);
    assert.equal(first.status, "rejected");
    assert.equal((first as PromiseRejectedResult).reason.code, ErrorCode.SshTimeout);
    assert.equal(second.status, "rejected");
    const err = (second as PromiseRejectedResult).reason as BangerError;
    assert.equal(err.code, ErrorCode.InvalidState, err.message);
    assert.match(err.message, /VM dev is already running/);
    assert.deepEqual(
      driver.calls.filter((c) => c === "start"),
      ["start"],
      "a second VMM on the same disks",
    );
    assert.equal(f.ops.taps.size, 1);
  } finally {
    listener.close();
    await f.done();
  }
});

test("two VMs deleted at once in a fresh home: one ssh key generation serves both", async () => {
  const f = await fixture(scriptedDriver({}), { bridge: false });
  try {
    f.store.insertVm(vmRow({ id: "0123456789ab", name: "dev2" }));
    // Each delete forgets its host key with banger's identity, made on first use.
    const results = await Promise.allSettled([f.vms.delete(["dev"]), f.vms.delete(["dev2"])]);
    assert.deepEqual(
      results.map((r) => (r.status === "rejected" ? String(r.reason) : "ok")),
      ["ok", "ok"],
    );
    assert.ok(await exists(path.join(f.home.layout.sshDir, "id_ed25519.pub")));
  } finally {
    await f.done();
  }
});

test("reconcile: a running row whose VMM is gone is stopped and gives back its tap and handles", async () => {
  const driver = scriptedDriver({});
  const f = await fixture(driver, { bridge: true, state: "running" });
  try {
    await runningRow(f);
    await f.vms.reconcile();
    assert.equal(f.store.getVmByName("dev")?.state, "stopped");
    assert.equal(await exists(path.join(f.dir, "handles.json")), false);
    assert.equal(f.store.getVmByName("dev")?.teardownJson, null);
    assert.ok(f.ops.calls.includes("deleteTap bg-0123456789ab"), f.ops.calls.join("\n"));
  } finally {
    await f.done();
  }
});

test("reconcile: a VM not recorded as running has any VMM its dir names killed (a daemon killed while it loaded)", async () => {
  const driver = scriptedDriver({});
  const f = await fixture(driver, { bridge: false, state: "stopped" });
  try {
    await f.vms.reconcile();
    assert.deepEqual(driver.calls, [`killStray ${path.basename(f.dir)}`]);
    assert.equal(f.store.getVmByName("dev")?.state, "stopped");
  } finally {
    await f.done();
  }
});

test("a start cancelled during the SSH wait: Cancelled, the probe is cancelled too, the live VM stays running", async () => {
  const listener = await silentListener();
  const driver = scriptedDriver({ sshPort: listener.port });
  const f = await fixture(driver, { bridge: true, sshDeadlineMs: 60_000 });
  try {
    const abort = new AbortController();
    const started = f.vms.start("dev", () => {}, abort.signal);
    // Cancel once a probe is stuck on the listener.
    for (let i = 0; i < 500 && listener.accepted() === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    assert.ok(listener.accepted() > 0, "no probe reached the listener");
    abort.abort();
    const err = await rejection(started);
    assert.equal(err.code, ErrorCode.Cancelled);
    assert.ok(f.sshSignals.length > 0 && f.sshSignals.every((s) => s === abort.signal));
    assert.equal(f.store.getVmByName("dev")?.state, "running");
    assert.equal(f.ops.taps.size, 1);
  } finally {
    listener.close();
    await f.done();
  }
});

test("a VMM that dies as the SSH wait runs out: BootFailed, not SshTimeout's 'left running'", async () => {
  const listener = await silentListener();
  const driver = scriptedDriver({ sshPort: listener.port });
  // The first probe, stuck on the silent listener, is held to the rest of the 2 s wait; the
  // VMM dies as it returns, so the wait ends on its deadline with the VMM gone.
  const f = await fixture(driver, {
    bridge: true,
    sshDeadlineMs: 2000,
    afterSsh: () => (driver.alive = false),
  });
  try {
    const err = await rejection(f.vms.start("dev"));
    assert.equal(err.code, ErrorCode.BootFailed, err.message);
    assert.match(err.hint ?? "", /'banger vm logs dev'/);
    assert.doesNotMatch(err.hint ?? "", /left running/);
    assert.equal(f.store.getVmByName("dev")?.state, "stopped");
    assert.equal(f.ops.taps.size, 0);
  } finally {
    listener.close();
    await f.done();
  }
});

test("prune counts a VM whose VMM has exited as not running", async () => {
  const driver = scriptedDriver({});
  const f = await fixture(driver, { bridge: true, state: "running" });
  try {
    await runningRow(f);
    driver.alive = true;
    assert.deepEqual((await f.vms.prune()).deleted, [], "a live VM was pruned");
    driver.alive = false;
    assert.deepEqual((await f.vms.prune()).deleted, ["dev"]);
    assert.equal(f.store.getVmByName("dev"), null);
    assert.ok(f.ops.calls.includes("deleteTap bg-0123456789ab"), f.ops.calls.join("\n"));
  } finally {
    await f.done();
  }
});

test("list, show and health never call a VM running whose VMM has exited: they release it", async () => {
  for (const ask of ["list", "show", "health"] as const) {
    const driver = scriptedDriver({});
    const f = await fixture(driver, { bridge: true, state: "running" });
    try {
      await runningRow(f);
      driver.alive = true;
      assert.equal((await f.vms.show("dev")).state, "running", "a live VMM is running");
      driver.alive = false; // the guest powered off, or its QEMU was killed
      if (ask === "list")
        assert.deepEqual(
          (await f.vms.list()).map((v) => v.state),
          ["stopped"],
        );
      if (ask === "show") assert.equal((await f.vms.show("dev")).state, "stopped");
      if (ask === "health") assert.equal((await f.vms.health("dev")).vmm, false);
      await assertReleased(f);
    } finally {
      await f.done();
    }
  }
});

test("the daemon notices a VMM that exits, with no request about it: by its poll and by the driver's signal", async () => {
  for (const by of ["poll", "signal"] as const) {
    const driver = scriptedDriver({});
    const f = await fixture(driver, { bridge: true, state: "running" });
    // The signal's case polls once a minute: only the signal can be what noticed it.
    const watch = f.vms.watchExits(by === "poll" ? 50 : 60_000);
    try {
      await runningRow(f);
      driver.alive = true;
      await watch.check();
      assert.equal(f.store.getVmByName("dev")?.state, "running", "a live VMM was released");
      driver.alive = false;
      if (by === "signal") driver.exited();
      for (let i = 0; i < 200 && f.store.getVmByName("dev")?.state !== "stopped"; i++)
        await new Promise((r) => setTimeout(r, 25));
      await watch.stop();
      await assertReleased(f);
    } finally {
      await watch.stop();
      await f.done();
    }
  }
});
