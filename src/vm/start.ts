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
import type { VmHandles, VmSpec } from "../vmm/driver.js";
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
      if ((await driver.status(handles).catch(() => "stopped" as const)) === "running") throw err;
      await releaseDead(ctx, ctx.row(name), handles);
      // It died as the deadline ran out: not "left running for inspection".
      if (err instanceof BangerError && err.code === ErrorCode.SshTimeout)
        throw vmmExitedDuringBoot(row.name);
      throw err;
    }
    return ctx.info(ctx.row(name));
  });
}
