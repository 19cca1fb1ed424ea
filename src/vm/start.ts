import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { loadConfig } from "../config/config.js";
import { vmmExitedDuringBoot, waitForSsh } from "../guest/probe.js";
import { initKernelArgs } from "../image/guest-init.js";
import type { Progress } from "../image/service.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import type { NetworkAttachment } from "../net/backend.js";
import { detectAccel, realAccelDeps, resolveAccel, tcgKernelArgs } from "../system/accel.js";
import {
  CONSOLE_LOG_FILE,
  consoleMark,
  consoleTail,
  type ConsoleMark,
} from "../vmm/console-log.js";
import type { Driver, VmHandles, VmSpec } from "../vmm/driver.js";
import { WORK_DISK, type VmContext } from "./context.js";
import { releaseDead } from "./teardown.js";

/** Boots a created or stopped VM and waits for its SSH; a VMM that dies on the way leaves it stopped. */
export function startVm(
  ctx: VmContext,
  name: string,
  progress: Progress = () => {},
  signal?: AbortSignal,
): Promise<VmInfo> {
  return ctx.withVmLock(name, async (row) => {
    const current = await ctx.runningHandles(row);
    if (current && (await ctx.driverFor(current.vmm).status(current)) === "running") {
      throw new BangerError(
        ErrorCode.InvalidState,
        `VM ${name} is already running`,
        `'banger vm ssh ${name}' to use it`,
      );
    }
    // Recorded as running but its VMM is gone (it crashed): give back what it held first.
    if (row.state === "running") await releaseDead(ctx, row, current);
    const kernel = await ctx.deps.kernels.show(row.kernelRef ?? DISTRO_KERNEL_NAME);
    const driver = ctx.driverFor(row.vmm);
    const config = await loadConfig(ctx.deps.layout.configFile);
    const accelDeps = ctx.deps.accel ?? realAccelDeps();
    const accel = resolveAccel(config.accel, await detectAccel(accelDeps));
    const extra =
      accel === "tcg"
        ? tcgKernelArgs(await accelDeps.readFile("/proc/cpuinfo").catch(() => ""))
        : [];
    const dir = ctx.dirOf(row.id);
    let attached: NetworkAttachment | null = null;
    // What the console held before this boot is an earlier boot's, not this one's reason.
    let mark: ConsoleMark | null = null;
    let handles: VmHandles;
    try {
      attached = await ctx.network.attachVm(row, {
        vmDir: dir,
        driver: driver.features,
        progress: (message) => progress({ stage: "network", message }),
      });
      const cmdline = [
        kernel.cmdline ?? "console=ttyS0 reboot=t panic=-1 rw",
        "root=/dev/vda",
        ...extra,
        ...attached.kernelArgs,
        `banger.hostname=${row.name}`,
        // The init recorded on the image when it was finalised.
        ...initKernelArgs(
          row.imageId ? (ctx.deps.store.getImage(row.imageId)?.init ?? null) : null,
        ),
      ].join(" ");
      const spec: VmSpec = {
        id: row.id,
        name: row.name,
        vcpu: row.vcpu,
        memoryBytes: row.memoryBytes,
        accel,
        kernel: {
          vmlinuz: kernel.files.vmlinuz,
          vmlinux: kernel.files.vmlinux,
          initrd: kernel.files.initrd,
          cmdline,
        },
        rootDisk: driver.rootDisk.path(dir),
        workDisk: path.join(dir, WORK_DISK),
        dir,
        network: attached.vmm,
        consoleLogBytes: config.consoleLogBytes,
      };
      progress({
        stage: "boot",
        message: `${driver.name}, ${accel === "kvm" ? "KVM" : "software emulation (TCG)"}`,
      });
      mark = consoleMark(path.join(dir, CONSOLE_LOG_FILE));
      handles = { ...(await driver.start(spec)), ...attached.handles };
    } catch (err) {
      if (attached) await ctx.network.releaseVm(attached.handles, dir, { failed: true });
      throw err;
    }
    await ctx.writeHandles(row, handles);
    ctx.deps.store.updateVm(row.id, {
      state: "running",
      ip: attached.ip,
      mac: attached.mac,
      teardownJson: JSON.stringify(handles),
    });
    progress({ stage: "ssh", message: "waiting for sshd" });
    try {
      await waitForSsh({
        shell: ctx.shell,
        target: await ctx.targetOf(row, handles),
        deadlineMs: ctx.deps.sshDeadlineMs ?? config.timeouts.sshWaitMs,
        isAlive: async () => (await driver.status(handles)) === "running",
        ...(signal ? { signal } : {}),
      });
    } catch (err) {
      // A live VMM stays running for inspection (SshTimeout) or for the caller to remove
      // (a cancelled create). A dead one holds nothing: its row must not say running.
      if ((await driver.status(handles).catch(() => "stopped" as const)) === "running")
        throw isBootFailure(err) ? withConsoleTail(err, handles, mark) : err;
      const tail = await lastConsoleLines(driver, handles, mark);
      await releaseDead(ctx, ctx.row(name), handles);
      // It died as the deadline ran out: not "left running for inspection".
      if (err instanceof BangerError && err.code === ErrorCode.SshTimeout)
        throw quoting(vmmExitedDuringBoot(row.name), tail);
      throw isBootFailure(err) ? quoting(err, tail) : err;
    }
    return ctx.info(ctx.row(name));
  });
}

/** Waits up to this long for an exited VMM's last console bytes to reach the log. */
const CONSOLE_SETTLE_MS = 2_000;

function isBootFailure(err: unknown): err is BangerError {
  return (
    err instanceof BangerError &&
    (err.code === ErrorCode.BootFailed || err.code === ErrorCode.SshTimeout)
  );
}

/** The console's last lines of this boot, once the exited VMM's last output is in the log. */
async function lastConsoleLines(
  driver: Driver,
  handles: VmHandles,
  mark: ConsoleMark | null,
): Promise<string> {
  await driver.consoleEnded?.(handles, CONSOLE_SETTLE_MS).catch(() => undefined);
  return consoleTail(handles.consoleLog, mark);
}

function withConsoleTail(err: BangerError, handles: VmHandles, mark: ConsoleMark | null) {
  return quoting(err, consoleTail(handles.consoleLog, mark));
}

/**
 * The error with the console's last lines in its message (escaped guest text, each line
 * marked as quoted), so it says why even once the VM is gone (`vm run --rm`).
 */
function quoting(err: BangerError, tail: string): BangerError {
  if (!tail) return err;
  const quoted = tail
    .split("\n")
    .map((line) => `  | ${line}`)
    .join("\n");
  return new BangerError(
    err.code,
    `${err.message}; its console's last lines:\n${quoted}`,
    err.hint,
  );
}
