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
import type { VmRow } from "../store/store.js";
import { sendIdentity } from "../guest/identity.js";
import type { VmContext } from "./context.js";
import {
  clearRestoreMarker,
  IDENTITY_MS,
  identityFor,
  readRestoreMarker,
  RestoreFailed,
  workDiskOf,
  type RestoreMarker,
} from "./restore.js";
import { releaseDead } from "./teardown.js";

/** What a start did beyond its answer: a restore that fell back says why. */
export interface StartReport {
  warnings: string[];
  /** True when the VM was restored from its snapshot (not booted). */
  restored: boolean;
}

/**
 * Boots a created or stopped VM and waits for its SSH; a VMM that dies on the way leaves it stopped.
 * A clone's first start restores its snapshot instead (restore.ts); a restore that fails is
 * undone and the VM boots cold, with a warning in `report`.
 */
export function startVm(
  ctx: VmContext,
  name: string,
  progress: Progress = () => {},
  signal?: AbortSignal,
  report: StartReport = { warnings: [], restored: false },
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
    const dir = ctx.dirOf(row.id);
    const restoring = await readRestoreMarker(dir);
    if (restoring) {
      // Gone before the guest runs: once a restored guest has written to its disks, loading that
      // memory again (a later start after a cancel or a daemon restart) would corrupt them.
      await clearRestoreMarker(dir);
      try {
        const info = await boot(ctx, row, progress, signal, restoring);
        report.restored = true;
        return info;
      } catch (err) {
        if (!(err instanceof RestoreFailed) || signal?.aborted) throw unwrap(err);
        const warning = `could not restore VM ${name} from snapshot ${restoring.snapshot} (${err.message}); booted it cold instead`;
        report.warnings.push(warning);
        ctx.deps.log?.error({ err: err.reason, vm: name }, "restore failed, booting cold");
        progress({ stage: "restore", message: "restore failed: booting cold" });
      }
    }
    // A clone whose restore failed boots its snapshot's disks, whose host keys its siblings
    // have too: its first boot makes new ones (banger.renew=1, read by first-boot.sh).
    return boot(ctx, ctx.row(name), progress, signal, null, restoring !== null);
  });
}

function unwrap(err: unknown): unknown {
  return err instanceof RestoreFailed ? err.reason : err;
}

/**
 * One boot (or restore) under the VM's lock. A restore that fails anywhere (the VMM, the
 * identity channel, SSH) leaves nothing running and throws RestoreFailed.
 */
async function boot(
  ctx: VmContext,
  row: VmRow,
  progress: Progress,
  signal: AbortSignal | undefined,
  restoring: RestoreMarker | null,
  renewKeys = false,
): Promise<VmInfo> {
  const name = row.name;
  const kernel = await ctx.deps.kernels.show(row.kernelRef ?? DISTRO_KERNEL_NAME);
  const driver = ctx.driverFor(row.vmm);
  const config = await loadConfig(ctx.deps.layout.configFile);
  const accelDeps = ctx.deps.accel ?? realAccelDeps();
  const accel = resolveAccel(config.accel, await detectAccel(accelDeps));
  const extra =
    accel === "tcg" ? tcgKernelArgs(await accelDeps.readFile("/proc/cpuinfo").catch(() => "")) : [];
  const dir = ctx.dirOf(row.id);
  const workDisk = await workDiskOf(dir);
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
      ...(renewKeys ? ["banger.renew=1"] : []),
      // The init recorded on the image when it was finalised.
      ...initKernelArgs(row.imageId ? (ctx.deps.store.getImage(row.imageId)?.init ?? null) : null),
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
      workDisk: workDisk.file,
      workDiskFormat: workDisk.format,
      dir,
      ...(restoring ? { restore: { memory: restoring.memory } } : {}),
      network: attached.vmm,
      consoleLogBytes: config.consoleLogBytes,
    };
    const how = `${driver.name}, ${accel === "kvm" ? "KVM" : "software emulation (TCG)"}`;
    if (restoring)
      progress({ stage: "restore", message: `from snapshot ${restoring.snapshot} (${how})` });
    else progress({ stage: "boot", message: how });
    mark = consoleMark(path.join(dir, CONSOLE_LOG_FILE));
    handles = { ...(await driver.start(spec)), ...attached.handles };
  } catch (err) {
    if (attached) await ctx.network.releaseVm(attached.handles, dir, { failed: true });
    throw restoring && !signal?.aborted ? new RestoreFailed(err) : err;
  }
  await ctx.writeHandles(row, handles);
  ctx.deps.store.updateVm(row.id, {
    state: "running",
    ip: attached.ip,
    mac: attached.mac,
    teardownJson: JSON.stringify(handles),
  });
  if (restoring) {
    try {
      // The restored guest still believes it is the VM it was saved from: tell it who it is.
      progress({ stage: "restore", message: "telling the guest its name, address and clock" });
      if (!handles.identitySocket) throw new Error("the VMM has no identity channel");
      await sendIdentity(handles.identitySocket, identityFor(row.name, attached), IDENTITY_MS);
    } catch (err) {
      await driver.kill(handles).catch(() => undefined);
      await releaseDead(ctx, ctx.row(name), handles);
      throw new RestoreFailed(err);
    }
  }
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
    if (restoring && !signal?.aborted) {
      await driver.kill(handles).catch(() => undefined);
      await releaseDead(ctx, ctx.row(name), handles);
      throw new RestoreFailed(err);
    }
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
