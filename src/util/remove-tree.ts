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
    const names: string[] = [];
    const dir = await fsp.opendir(target, { bufferSize: 64 });
    try {
      for await (const entry of dir) {
        names.push(entry.name);
        if (names.length >= BATCH) break;
      }
    } finally {
      await dir.close().catch(() => {});
    }
    for (const name of names) await removeTree(path.join(target, name));
    if (names.length < BATCH) break;
  }
  await fsp.rmdir(target).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}
