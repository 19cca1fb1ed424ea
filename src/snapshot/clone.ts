import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { checkVmShape } from "../config/limits.js";
import type { Progress } from "../image/service.js";
import type { VmRow } from "../store/store.js";
import { VM_CREATING_MARKER } from "../vm/context.js";
import { writeRestoreMarker } from "../vm/restore.js";
import { SNAPSHOT_FILES } from "../vmm/driver.js";
import { generateName } from "../vm/create.js";
import { deleteVms } from "../vm/delete.js";
import { startVm, type StartReport } from "../vm/start.js";
import { killVm } from "../vm/stop.js";
import { checkName, type SnapshotContext } from "./context.js";
import { checkRestorable } from "./restorable.js";

export interface CloneRequest {
  /** The snapshot to clone, by name. */
  snapshot: string;
  /** The new VM's name; default a generated one. */
  name?: string | undefined;
  nat?: boolean | undefined;
  /** false: make the VM (disks, row) but do not start it. */
  start?: boolean | undefined;
}

/**
 * `vm create --from-snapshot`: a new VM with the snapshot's image, kernel and sizes, whose disks
 * are overlays over the snapshot's (Driver.snapshots.cloneDisks) and whose `restore` marker makes
 * its start restore the saved state instead of booting. Refused up front when the host cannot
 * restore it (checkRestorable); nothing is left behind on failure.
 */
export async function cloneSnapshot(
  ctx: SnapshotContext,
  req: CloneRequest,
  progress: Progress = () => {},
  signal?: AbortSignal,
): Promise<VmInfo & StartReport> {
  const { store } = ctx;
  const vms = ctx.deps.vms;
  const snap = ctx.row(req.snapshot);
  const name = req.name ?? generateName(vms);
  checkName("VM", name);
  refuseTakenVm(ctx, name);
  return vms.locks.run(`name:${name}`, async () => {
    // Under the snapshot's lock: a delete waits for the clone's row, then sees it.
    const row = await vms.locks.run(`snapshot:${snap.id}`, async () => {
      const current = store.snapshots.byId(snap.id);
      if (!current)
        throw new BangerError(
          ErrorCode.NotFound,
          `snapshot ${snap.name} was deleted while this request waited`,
          "'banger snapshot list' shows what exists",
        );
      refuseTakenVm(ctx, name);
      checkVmShape(current, vms.deps.host);
      const snapDir = ctx.dirOf(current.id);
      const driver = vms.driverFor(current.vmm);
      const support = await checkRestorable(current, {
        store,
        driver,
        accel: await ctx.hostAccel(),
        dir: snapDir,
      });
      const id = randomBytes(6).toString("hex");
      const dir = vms.dirOf(id);
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      // Until the row exists this dir is unfinished work the start-up sweep may remove.
      await fsp.writeFile(path.join(dir, VM_CREATING_MARKER), "");
      const now = new Date().toISOString();
      const vm: VmRow = {
        id,
        name,
        imageId: current.imageId,
        kernelRef: current.kernelRef,
        vcpu: current.vcpu,
        memoryBytes: current.memoryBytes,
        diskBytes: current.diskBytes,
        state: "created",
        nat: req.nat ?? false,
        ip: null,
        mac: null,
        vmm: current.vmm,
        teardownJson: null,
        snapshotId: current.id,
        createdAt: now,
        updatedAt: now,
      };
      try {
        progress({ stage: "disks", message: `overlays over snapshot ${current.name}` });
        await support.cloneDisks(snapDir, dir);
        await writeRestoreMarker(dir, {
          snapshot: current.name,
          memory: path.join(snapDir, SNAPSHOT_FILES.memory),
        });
        store.insertVm(vm);
      } catch (err) {
        await fsp.rm(dir, { recursive: true, force: true });
        throw err;
      }
      await fsp.rm(path.join(dir, VM_CREATING_MARKER), { force: true }).catch(() => undefined);
      return vm;
    });
    if (req.start === false) return { ...vms.info(row), warnings: [], restored: false };
    try {
      const report: StartReport = { warnings: [], restored: false };
      const info = await startVm(vms, name, progress, signal, report);
      return { ...info, ...report };
    } catch (err) {
      // A clone its caller gave up on (Ctrl-C, disconnect) leaves nothing behind.
      if (signal?.aborted) {
        await killVm(vms, name)
          .then(() => deleteVms(vms, [name]))
          .catch((e: unknown) =>
            vms.deps.log?.error({ err: e, vm: name }, "could not remove a cancelled clone"),
          );
      }
      throw err;
    }
  });
}

export function refuseTakenVm(ctx: SnapshotContext, name: string): void {
  if (ctx.store.getVmByName(name))
    throw new BangerError(
      ErrorCode.AlreadyExists,
      `a VM named "${name}" already exists`,
      `pick another --name, or 'banger vm delete ${name}'`,
    );
}
