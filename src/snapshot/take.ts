import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { SnapshotInfo } from "../api/methods.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import type { Progress } from "../image/service.js";
import type { SnapshotRow } from "../store/store.js";
import { removeTree } from "../util/remove-tree.js";
import { notRunning } from "../vm/context.js";
import { releaseDead } from "../vm/teardown.js";
import { workDiskOf } from "../vm/restore.js";
import { checkName, freeName, kernelFingerprint, type SnapshotContext } from "./context.js";

export interface TakeRequest {
  /** The snapshot's name; default `<vm>-snap-<n>`. */
  name?: string | undefined;
  /** Leave the VM stopped (its network released, as `vm stop` does) instead of running it on. */
  stop?: boolean | undefined;
  /** Warm start's own save (warm.ts): the boot snapshot of the shape with this key. */
  boot?: { shapeKey: string };
}

/**
 * Saves a running VM under its lock: memory, device state and both disks at one paused instant,
 * into `snapshots/.staging-<id>`, renamed to `snapshots/<id>` once complete, then the row. A
 * failure removes the staging dir and leaves the VM as the driver left it (running on).
 */
export async function takeSnapshot(
  ctx: SnapshotContext,
  vmName: string,
  req: TakeRequest,
  progress: Progress = () => {},
): Promise<SnapshotInfo & { pausedMs: number }> {
  const { store } = ctx;
  const vms = ctx.deps.vms;
  if (req.name !== undefined) {
    checkName("snapshot", req.name);
    refuseTaken(ctx, req.name);
  }
  return vms.withVmLock(vmName, async (vm) => {
    const handles = await vms.liveHandles(vm);
    if (!handles) throw notRunning(vmName);
    const driver = vms.driverFor(handles.vmm);
    if (!driver.snapshots)
      throw new BangerError(
        ErrorCode.Precondition,
        `${driver.name} VMs cannot be snapshotted by this banger`,
        "snapshots need the qemu VMM",
      );
    const image = vm.imageId ? store.getImage(vm.imageId) : null;
    if (!image)
      throw new BangerError(
        ErrorCode.Precondition,
        `the image VM ${vm.name} was created from is gone`,
        "a snapshot needs its image: only VMs whose image is still there can be snapshotted",
      );
    const kernelRef = vm.kernelRef ?? DISTRO_KERNEL_NAME;
    const kernel = store.getKernel(kernelRef);
    if (!kernel)
      throw new BangerError(
        ErrorCode.Precondition,
        `the kernel VM ${vm.name} booted (${kernelRef}) is gone`,
        "a snapshot needs its kernel: only VMs whose kernel is still there can be snapshotted",
      );
    const name = req.name ?? freeName(vm.name, "snap", (n) => store.snapshots.byName(n) !== null);
    // Two saves under one name at once: the second waits and then finds it taken.
    return vms.locks.run(`snapshot-name:${name}`, async () => {
      refuseTaken(ctx, name);
      progress({ stage: "identity", message: "starting the guest's identity reader" });
      await ctx.deps.prepareGuest(await vms.targetOf(vm, handles));
      const accel = await ctx.hostAccel();
      const id = randomBytes(6).toString("hex");
      const staging = ctx.stagingOf(id);
      await fsp.mkdir(path.dirname(staging), { recursive: true, mode: 0o700 });
      await fsp.mkdir(staging, { mode: 0o700 });
      progress({ stage: "save", message: "pausing the VM, saving memory and disks" });
      let saved;
      try {
        saved = await driver.snapshots!.save(handles, {
          dir: staging,
          vmDir: vms.dirOf(vm.id),
          imageRootfs: image.rootfsPath,
          workDisk: await workDiskOf(vms.dirOf(vm.id)),
          resume: req.stop !== true,
          deadlineMs: ctx.saveDeadlineMs,
        });
        // Guest memory and disks: the user's alone, whatever the driver's umask gave them.
        for (const f of await fsp.readdir(staging)) await fsp.chmod(path.join(staging, f), 0o600);
      } catch (err) {
        await removeTree(staging).catch((e: unknown) =>
          vms.deps.log?.error({ err: e, path: staging }, "could not remove a failed snapshot"),
        );
        throw err;
      } finally {
        // --stop quit the VMM (or a failed save lost it): give back what it held, as a stop does.
        if ((await driver.status(handles).catch(() => "running" as const)) === "stopped")
          await releaseDead(vms, vms.row(vm.name), handles);
      }
      const row: SnapshotRow = {
        id,
        name,
        kind: req.boot ? "boot" : "user",
        sourceVm: vm.name,
        imageId: image.id,
        kernelRef,
        kernelFingerprint: kernelFingerprint(kernel),
        vmm: driver.name,
        vmmVersion: saved.vmmVersion,
        accel,
        vcpu: vm.vcpu,
        memoryBytes: vm.memoryBytes,
        diskBytes: vm.diskBytes,
        shapeKey: req.boot?.shapeKey ?? null,
        bytes: saved.bytes,
        createdAt: new Date().toISOString(),
      };
      const dir = ctx.dirOf(id);
      try {
        // Complete or absent: a daemon killed before this leaves only a staging dir.
        await fsp.rename(staging, dir);
        store.snapshots.insert(row);
      } catch (err) {
        await removeTree(staging).catch(() => undefined);
        await removeTree(dir).catch(() => undefined);
        throw err;
      }
      vms.deps.log?.info(
        { vm: vm.name, snapshot: name, bytes: saved.bytes, pausedMs: saved.pausedMs },
        "snapshot taken",
      );
      // The snapshot is complete either way: a guest that does not take its line is logged.
      if (req.stop !== true)
        await ctx.deps
          .resumedGuest(vm, handles)
          .catch((err: unknown) =>
            vms.deps.log?.error({ err, vm: vm.name }, "the resumed VM did not take its identity"),
          );
      return { ...ctx.info(row), pausedMs: saved.pausedMs };
    });
  });
}

function refuseTaken(ctx: SnapshotContext, name: string): void {
  if (ctx.store.snapshots.byName(name))
    throw new BangerError(
      ErrorCode.AlreadyExists,
      `a snapshot named "${name}" already exists`,
      `pick another --name, or 'banger snapshot delete ${name}'`,
    );
}
