import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { Layout } from "../paths/layout.js";
import type { SnapshotRow, Store } from "../store/store.js";
import { removeTree } from "../util/remove-tree.js";

/**
 * Before an image or kernel is deleted: refused while user snapshots were taken on it (naming
 * them: they are the user's, and clones may sit on them); boot snapshots, banger's own cache of
 * a booted shape, are deleted with it. Their clones are VMs of that image, which image delete
 * already refuses.
 */
export async function dropSnapshotsOf(
  store: Store,
  layout: Layout,
  what: { kind: "image" | "kernel"; name: string },
  uses: (s: SnapshotRow) => boolean,
): Promise<void> {
  const on = store.snapshots.list().filter(uses);
  const user = on.filter((s) => s.kind === "user").map((s) => s.name);
  if (user.length > 0)
    throw new BangerError(
      ErrorCode.InvalidState,
      `${what.kind} "${what.name}" has snapshot(s) ${user.join(", ")}`,
      `delete those first ('banger snapshot delete <name>'): a snapshot cannot be restored without its ${what.kind}`,
    );
  const ids = new Set(on.map((s) => s.id));
  const clones = store.listVms().filter((v) => v.snapshotId !== null && ids.has(v.snapshotId));
  if (clones.length > 0)
    throw new BangerError(
      ErrorCode.InvalidState,
      `${what.kind} "${what.name}" has VMs cloned from its boot snapshot: ${clones.map((v) => v.name).join(", ")}`,
      `delete those VMs first ('banger vm delete ${clones.map((v) => v.name).join(" ")}')`,
    );
  for (const boot of on) {
    store.snapshots.delete(boot.id);
    // A daemon killed here leaves a directory no row owns: the start-up sweep removes it.
    await removeTree(path.join(layout.snapshotsDir, boot.id));
  }
}
