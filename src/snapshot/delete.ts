import { BangerError, ErrorCode } from "../api/errors.js";
import { removeTree } from "../util/remove-tree.js";
import type { SnapshotContext } from "./context.js";

/** Removes a snapshot's row, then its files; refused while VMs sit on it, naming them. */
export async function deleteSnapshot(
  ctx: SnapshotContext,
  name: string,
): Promise<{ deleted: string; freedBytes: number }> {
  const snap = ctx.row(name);
  // Under the snapshot's lock: a clone being made finishes its row first, and is seen here.
  return ctx.deps.vms.locks.run(`snapshot:${snap.id}`, async () => {
    if (!ctx.store.snapshots.byId(snap.id)) return { deleted: name, freedBytes: 0 };
    const clones = ctx.clonesOf(snap.id);
    if (clones.length > 0)
      throw new BangerError(
        ErrorCode.InvalidState,
        `snapshot "${name}" has clones: ${clones.join(", ")}`,
        `their disks sit on it: delete them first ('banger vm delete ${clones.join(" ")}'), then the snapshot`,
      );
    ctx.store.snapshots.delete(snap.id);
    // A daemon killed here leaves a directory no row owns: the start-up sweep removes it.
    await removeTree(ctx.dirOf(snap.id));
    return { deleted: name, freedBytes: snap.bytes };
  });
}

/**
 * Warm start's boot snapshots that no VM sits on, deleted (or only listed with `dryRun`); user
 * snapshots are the user's and stay.
 */
export async function pruneBootSnapshots(
  ctx: SnapshotContext,
  dryRun: boolean,
): Promise<{ deleted: string[]; freedBytes: number; dryRun: boolean }> {
  const idle = ctx.store.snapshots
    .list()
    .filter((s) => s.kind === "boot" && ctx.clonesOf(s.id).length === 0);
  let freedBytes = 0;
  const deleted: string[] = [];
  for (const s of idle) {
    if (!dryRun) {
      // A clone made meanwhile keeps it: the delete refuses, and the prune goes on.
      const done = await deleteSnapshot(ctx, s.name).catch(() => null);
      if (!done) continue;
    }
    deleted.push(s.name);
    freedBytes += s.bytes;
  }
  return { deleted, freedBytes, dryRun };
}
