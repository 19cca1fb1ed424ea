import fsp from "node:fs/promises";
import path from "node:path";
import type { Layout } from "../paths/layout.js";
import type { Store } from "../store/store.js";
import { removeTree } from "../util/remove-tree.js";
import { STAGING_PREFIX } from "./context.js";

export interface SnapshotSweepResult {
  /** Staging dirs of saves a killed daemon never finished, and dirs no row owns. */
  removed: string[];
  /** Entries that are not banger's names (or not plain directories): left alone. */
  skipped: string[];
  /** Rows whose directory was gone: dropped (their clones keep running on nothing: logged). */
  dropped: string[];
}

const ID = /^[0-9a-f]{12}$/;

/**
 * The start-up sweep's part under snapshots/: a `.staging-<id>` (a save the daemon was killed
 * in) and an `<id>` no row owns (killed between the rename and the row, or mid-delete) are
 * removed; other names and symlinks are left alone. A row whose directory is gone is dropped,
 * so no snapshot is listed that cannot be restored.
 */
export async function sweepSnapshots(
  store: Store,
  layout: Layout,
  log?: { info(obj: object, msg: string): void; error(obj: object, msg: string): void },
): Promise<SnapshotSweepResult> {
  const result: SnapshotSweepResult = { removed: [], skipped: [], dropped: [] };
  const rows = store.snapshots.list();
  const owned = new Set(rows.map((r) => r.id));
  for (const name of await fsp.readdir(layout.snapshotsDir).catch(() => [] as string[])) {
    const entry = path.join(layout.snapshotsDir, name);
    const stat = await fsp.lstat(entry).catch(() => null);
    if (!stat) continue;
    const staging = name.startsWith(STAGING_PREFIX) && ID.test(name.slice(STAGING_PREFIX.length));
    if (!stat.isDirectory() || (!staging && !ID.test(name))) {
      result.skipped.push(entry);
      continue;
    }
    if (!staging && owned.has(name)) continue;
    try {
      await removeTree(entry);
      result.removed.push(entry);
      log?.info({ path: entry }, "removed an unfinished or unowned snapshot directory");
    } catch (err) {
      log?.error({ err, path: entry }, "could not remove a leftover snapshot directory");
    }
  }
  for (const row of rows) {
    const stat = await fsp.lstat(path.join(layout.snapshotsDir, row.id)).catch(() => null);
    if (stat?.isDirectory()) continue;
    const clones = store.snapshots.dropLost(row.id);
    result.dropped.push(row.name);
    log?.error(
      { snapshot: row.name, clones },
      clones.length > 0
        ? "a snapshot's directory is gone: its row is dropped; the VMs cloned from it cannot start again (delete them)"
        : "a snapshot's directory is gone: its row is dropped",
    );
  }
  return result;
}
