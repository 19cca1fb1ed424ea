import fsp from "node:fs/promises";
import path from "node:path";

/** Names read from a directory before descending: bounds both memory and open handles. */
const BATCH = 512;

/**
 * `rm -rf` whose memory does not grow with the tree: fs.rm's recursive mode lists every
 * directory at once (a 200k-file image tree took tens of MB just to delete). Symlinks are
 * removed, never followed. A missing path is fine.
 */
export async function removeTree(target: string): Promise<void> {
  const stat = await fsp.lstat(target).catch(() => null);
  if (!stat) return;
  if (!stat.isDirectory()) {
    await fsp.rm(target, { force: true });
    return;
  }
  for (;;) {
    // A batch of names, the handle closed before descending (deep trees must not hold one per level).
    const files: string[] = [];
    const dirs: string[] = [];
    const dir = await fsp.opendir(target, { bufferSize: 64 });
    try {
      for await (const entry of dir) {
        (entry.isDirectory() ? dirs : files).push(path.join(target, entry.name));
        if (files.length + dirs.length >= BATCH) break;
      }
    } finally {
      await dir.close().catch(() => {});
    }
    // A batch of files at once (bounded by BATCH); directories one after another.
    // (A filesystem without d_type reports directories as unknown: those go the slow way.)
    await Promise.all(
      files.map((f) =>
        fsp.rm(f, { force: true }).catch((err: NodeJS.ErrnoException) => {
          if (err.code === "ERR_FS_EISDIR" || err.code === "EISDIR") return removeTree(f);
          throw err;
        }),
      ),
    );
    for (const d of dirs) await removeTree(d);
    if (files.length + dirs.length < BATCH) break;
  }
  await fsp.rmdir(target).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}
