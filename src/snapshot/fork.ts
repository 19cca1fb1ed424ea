import type { VmInfo } from "../api/methods.js";
import type { Progress } from "../image/service.js";
import type { StartReport } from "../vm/start.js";
import { cloneSnapshot, refuseTakenVm } from "./clone.js";
import { checkName, freeName, type SnapshotContext } from "./context.js";
import { deleteSnapshot } from "./delete.js";
import { takeSnapshot } from "./take.js";

export interface ForkRequest {
  /** The new VM's name; default `<vm>-fork-<n>`. */
  clone?: string | undefined;
  nat?: boolean | undefined;
}

/**
 * `vm fork`: a snapshot of the running VM (named `<vm>-snap-<n>`, listed like any other), then
 * a clone of it. The clone's name is checked before anything is saved; a clone that cannot be
 * made takes its snapshot with it (one it was made from, even a failed start, keeps it).
 */
export async function forkVm(
  ctx: SnapshotContext,
  vmName: string,
  req: ForkRequest,
  progress: Progress = () => {},
  signal?: AbortSignal,
): Promise<VmInfo & StartReport & { snapshot: string }> {
  const vms = ctx.deps.vms;
  vms.row(vmName);
  const clone =
    req.clone ?? freeName(vmName, "fork", (n) => vms.deps.store.getVmByName(n) !== null);
  checkName("VM", clone);
  refuseTakenVm(ctx, clone);
  const snap = await takeSnapshot(ctx, vmName, {}, progress);
  try {
    const vm = await cloneSnapshot(
      ctx,
      { snapshot: snap.name, name: clone, nat: req.nat },
      progress,
      signal,
    );
    return { ...vm, snapshot: snap.name };
  } catch (err) {
    if (ctx.clonesOf(snap.id).length === 0)
      await deleteSnapshot(ctx, snap.name).catch((e: unknown) =>
        vms.deps.log?.error({ err: e, snapshot: snap.name }, "could not remove a fork's snapshot"),
      );
    throw err;
  }
}
