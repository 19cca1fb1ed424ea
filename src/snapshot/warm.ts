import { createHash } from "node:crypto";
import type { VmInfo } from "../api/methods.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { pushFileSync } from "../guest/file-sync-push.js";
import type { Progress } from "../image/service.js";
import { createVm, resolveShape, type CreateRequest } from "../vm/create.js";
import { cloneSnapshot } from "./clone.js";
import { kernelFingerprint, type SnapshotContext } from "./context.js";
import { deleteSnapshot } from "./delete.js";
import { checkRestorable } from "./restorable.js";
import { takeSnapshot } from "./take.js";
import { deleteVms } from "../vm/delete.js";
import { killVm } from "../vm/stop.js";

export interface WarmCreateRequest extends CreateRequest {
  /** Boot from the image even when a boot snapshot of this shape exists, and save none. */
  cold?: boolean | undefined;
}

export type WarmCreateResult = VmInfo & {
  warnings: string[];
  /** True when the VM was restored from its shape's boot snapshot rather than booted. */
  restored: boolean;
};

/**
 * `vm create` (and so `vm run`) with warm start: banger keeps one `boot` snapshot per shape
 * (image, kernel and its files, VMM and its version, accelerator, vcpu, memory, disk), saved
 * right after the first cold boot of that shape reached SSH; later creates of the shape are
 * clones of it, restored instead of booted, with `[[file_sync]]` copied in afterwards (the saved
 * work disk has what the first VM got). A boot snapshot that can no longer be restored (kernel
 * files, VMM or accelerator changed) is dropped when no VM sits on it, and the VM boots cold.
 */
export async function warmCreate(
  ctx: SnapshotContext,
  req: WarmCreateRequest,
  progress: Progress = () => {},
  signal?: AbortSignal,
): Promise<WarmCreateResult> {
  const vms = ctx.deps.vms;
  const cold = async () => ({ ...(await createVm(vms, req, progress, signal)), restored: false });
  if (req.cold || req.start === false) return cold();
  const shape = await resolveShape(vms, req);
  const vmm = await vms.deps.pickVmm();
  const driver = vms.driverFor(vmm);
  if (!driver.features.snapshot || !driver.snapshots) return cold();
  // The same ensure createVm does next (a lookup once the image and kernel are there).
  const image = await vms.deps.images.ensure(shape.imageName, progress, signal);
  const kernel = await vms.deps.kernels.ensure(
    req.kernelRef ?? image.kernel ?? DISTRO_KERNEL_NAME,
    (p) => progress({ ...p, stage: `kernel: ${p.stage}` }),
    signal,
  );
  const kernelRow = ctx.store.getKernel(kernel.name);
  if (!kernelRow) return cold();
  const accel = await ctx.hostAccel();
  const key = shapeKey([
    image.id,
    kernel.name,
    kernelFingerprint(kernelRow),
    vmm,
    await driver.describe(),
    accel,
    shape.vcpu,
    shape.memoryBytes,
    shape.diskBytes,
  ]);
  const boot = ctx.store.snapshots.byShapeKey(key);
  if (!boot) await dropStale(ctx, key, image.id, kernel.name, vmm, shape);
  if (boot) {
    const usable = await checkRestorable(boot, {
      store: ctx.store,
      driver,
      accel,
      dir: ctx.dirOf(boot.id),
    }).then(
      () => true,
      async (err: unknown) => {
        vms.deps.log?.info({ err, snapshot: boot.name }, "boot snapshot unusable, booting cold");
        // Another create may have dropped it, or a clone made meanwhile keeps it: boot cold anyway.
        if (ctx.clonesOf(boot.id).length === 0)
          await deleteSnapshot(ctx, boot.name).catch(() => undefined);
        return false;
      },
    );
    if (usable) {
      const info = await cloneSnapshot(
        ctx,
        { snapshot: boot.name, name: req.name, nat: req.nat },
        progress,
        signal,
      );
      try {
        progress({ stage: "files", message: "file_sync" });
        const row = vms.row(info.name);
        const handles = await vms.liveHandles(row);
        if (!handles) throw new Error(`VM ${info.name} stopped before its files were copied in`);
        const synced = await pushFileSync({
          shell: vms.shell,
          target: await vms.targetOf(row, handles),
          entries: shape.config.fileSync,
          ...(vms.deps.homeDir ? { homeDir: vms.deps.homeDir } : {}),
          ...(signal ? { signal } : {}),
        });
        return { ...info, warnings: [...info.warnings, ...synced.warnings] };
      } catch (err) {
        // A create that fails (or is cancelled) here leaves nothing, as a cold one would.
        await killVm(vms, info.name)
          .then(() => deleteVms(vms, [info.name]))
          .catch((e: unknown) =>
            vms.deps.log?.error({ err: e, vm: info.name }, "could not remove a failed warm VM"),
          );
        throw err;
      }
    }
  }
  const info = await cold();
  // One save per shape: a second create of it that booted cold meanwhile finds it taken.
  await vms.locks.run(`boot-snapshot:${key}`, async () => {
    if (ctx.store.snapshots.byShapeKey(key)) return;
    progress({ stage: "snapshot", message: "saving this shape's boot snapshot for next time" });
    await takeSnapshot(ctx, info.name, {
      name: `boot-${key.slice(0, 12)}`,
      boot: { shapeKey: key },
    }).then(
      () => undefined,
      (err: unknown) => {
        vms.deps.log?.error({ err, vm: info.name }, "could not save a boot snapshot");
        info.warnings.push(
          `could not save a boot snapshot (the next VM of this shape boots cold too): ${(err as Error).message}`,
        );
      },
    );
  });
  return info;
}

/**
 * Boot snapshots of the same image, kernel name, VMM and sizes under another key: saved before the
 * kernel's files, the VMM's version or the accelerator changed, so never restorable again; those
 * no VM sits on are deleted before this shape's new one is saved.
 */
async function dropStale(
  ctx: SnapshotContext,
  key: string,
  imageId: string,
  kernelRef: string,
  vmm: string,
  shape: { vcpu: number; memoryBytes: number; diskBytes: number },
): Promise<void> {
  for (const s of ctx.store.snapshots.list()) {
    const sameShape =
      s.kind === "boot" &&
      s.shapeKey !== key &&
      s.imageId === imageId &&
      s.kernelRef === kernelRef &&
      s.vmm === vmm &&
      s.vcpu === shape.vcpu &&
      s.memoryBytes === shape.memoryBytes &&
      s.diskBytes === shape.diskBytes;
    if (!sameShape || ctx.clonesOf(s.id).length > 0) continue;
    ctx.deps.vms.deps.log?.info(
      { snapshot: s.name },
      "dropping a boot snapshot no longer restorable",
    );
    await deleteSnapshot(ctx, s.name).catch(() => undefined);
  }
}

/** The key of one VM shape: what a restore needs to be the same. */
function shapeKey(parts: Array<string | number>): string {
  return createHash("sha256").update(JSON.stringify(parts)).digest("hex");
}
