import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { test } from "node:test";
import { Store } from "../src/store/store.js";
import type { CommandRunner, RunOptions } from "../src/system/runner.js";
import { isPidAlive } from "../src/vmm/process.js";
import { QemuDriver } from "../src/vmm/qemu/driver.js";
import type { Driver, VmHandles } from "../src/vmm/driver.js";
import { fakeHandles, qemuDiskAndFiles } from "./helpers/fake-driver.js";
import { testVmService } from "./helpers/services.js";
import { tempLayout } from "./helpers/temp-home.js";
import { vmRow } from "./helpers/vm-row.js";

// `[timeouts] stop` bounds a whole graceful stop, so a guest that answers nothing (a frozen
// VMM) is killed at that deadline instead of after every step's own fixed wait.

test("a guest that never answers SSH: the poweroff attempt and the VMM's stop share the stop deadline", async () => {
  const home = await tempLayout();
  const store = Store.open(home.layout.dbFile);
  try {
    const stopMs = 400;
    const sshCalls: Array<{ timeoutMs: number | undefined; tookMs: number }> = [];
    // ssh to a frozen guest: the TCP connect succeeds, no banner ever comes, so it gives up on
    // its own (ConnectTimeout) or is stopped at the call's timeout, whichever comes first.
    const runner: CommandRunner = {
      run: async (cmd: string, _args: string[], opts?: RunOptions) => {
        if (cmd !== "ssh") return { code: 0, signal: null, stdout: "", stderr: "" };
        const started = Date.now();
        await new Promise((r) => setTimeout(r, Math.min(opts?.timeoutMs ?? 60_000, 150)));
        sshCalls.push({ timeoutMs: opts?.timeoutMs, tookMs: Date.now() - started });
        throw new Error("ssh timed out");
      },
      which: async (cmd) => `/usr/bin/${cmd}`,
    };
    const stops: number[] = [];
    let alive = true;
    const handles = fakeHandles;
    const driver: Driver = {
      name: "qemu",
      ...qemuDiskAndFiles(runner),
      start: async () => handles,
      stop: async (_h, deadlineMs) => {
        stops.push(deadlineMs);
        alive = false;
      },
      kill: async () => {
        alive = false;
      },
      status: async () => (alive ? "running" : "stopped"),
      describe: async () => "fake",
    };
    const vms = testVmService(store, home.layout, driver, runner, { stopDeadlineMs: stopMs });
    store.insertVm(
      vmRow({
        name: "frozen",
        state: "running",
        ip: "10.0.2.15",
        teardownJson: JSON.stringify(handles),
      }),
    );

    const info = await vms.stop("frozen");
    assert.equal(info.state, "stopped");
    assert.equal(sshCalls.length, 1, "the guest is asked to power off once");
    const [ssh] = sshCalls;
    assert.ok(
      ssh!.timeoutMs !== undefined && ssh!.timeoutMs <= stopMs,
      `the poweroff attempt waits at most the stop deadline (${ssh!.timeoutMs} ms > ${stopMs} ms)`,
    );
    assert.equal(stops.length, 1);
    // What the poweroff attempt took comes out of what the VMM is given.
    assert.ok(
      stops[0]! <= Math.max(0, stopMs - ssh!.tookMs),
      `the VMM got ${stops[0]} ms after the poweroff attempt took ${ssh!.tookMs} ms, of ${stopMs} ms`,
    );
  } finally {
    store.close();
    await home.cleanup();
  }
});

test(
  "a frozen QEMU that never answers QMP is killed at the stop deadline, not after QMP's own wait",
  // Without the deadline bounding QMP too, the powerdown request alone waits 5 s.
  { timeout: 4_000 },
  async () => {
    const home = await tempLayout();
    const qmp = path.join(home.home, "qmp.sock");
    // A QMP socket that accepts and never speaks, as a SIGSTOPped QEMU's listen backlog does.
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(qmp, resolve));
    // A stand-in VMM whose command line names the binary and its control socket (vmmStatus checks both).
    const vmm = spawn(
      process.execPath,
      ["-e", "setInterval(() => {}, 1000)", "qemu-system-x86_64", qmp],
      { stdio: "ignore" },
    );
    try {
      await new Promise((resolve, reject) => vmm.once("spawn", resolve).once("error", reject));
      const handles: VmHandles = {
        vmm: "qemu",
        pid: vmm.pid!,
        controlSocket: qmp,
        consoleLog: path.join(home.home, "console.log"),
        sshHost: "127.0.0.1",
        sshPort: 1,
        tap: null,
      };
      const driver = new QemuDriver({
        run: async () => ({ code: 0, signal: null, stdout: "", stderr: "" }),
        which: async () => null,
      });
      assert.equal(await driver.status(handles), "running");
      await driver.stop(handles, 100);
      assert.equal(isPidAlive(vmm.pid!), false, "the VMM is gone once stop resolves");
    } finally {
      vmm.kill("SIGKILL");
      silent.close();
      await fs.rm(home.home, { recursive: true, force: true });
    }
  },
);
