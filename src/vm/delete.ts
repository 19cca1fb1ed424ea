import fsp from "node:fs/promises";
import { forgetHostKey } from "../guest/ssh.js";
import type { VmContext } from "./context.js";
import { shutdown } from "./teardown.js";

/**
 * Kills and removes each VM: its directory, its pinned host key, its row. No graceful stop: its
 * disks are removed next, so nothing the guest would flush survives anyway, and a guest's
 * poweroff took seconds under software emulation (every `vm run --rm` waited for it).
 */
export async function deleteVms(ctx: VmContext, names: string[]): Promise<{ deleted: string[] }> {
  const rows = names.map((n) => ctx.row(n)); // all names valid before anything is touched
  const deleted: string[] = [];
  for (const stale of rows) {
    await ctx.locks.run(stale.id, async () => {
      // As it is now: a start or stop may have run while this waited for the lock.
      const row = ctx.deps.store.listVms().find((v) => v.id === stale.id);
      if (!row) return; // another delete got there first
      await shutdown(ctx, row, "kill");
      await fsp.rm(ctx.dirOf(row.id), { recursive: true, force: true });
      await forgetHostKey(await ctx.sshIdentity(), row.name, ctx.deps.runner);
      ctx.deps.store.deleteVm(row.id);
    });
    deleted.push(stale.name);
  }
  return { deleted };
}

/** Deletes every VM that is not running (its VMM exited counts); one that fails is reported, the rest go on. */
export async function pruneVms(
  ctx: VmContext,
): Promise<{ deleted: string[]; failed: Array<{ name: string; error: string }> }> {
  const deleted: string[] = [];
  const failed: Array<{ name: string; error: string }> = [];
  for (const row of ctx.deps.store.listVms()) {
    if (row.state === "running" && !(await ctx.vmmGone(row))) continue;
    try {
      await deleteVms(ctx, [row.name]);
      deleted.push(row.name);
    } catch (err) {
      failed.push({ name: row.name, error: (err as Error).message });
    }
  }
  return { deleted, failed };
}
