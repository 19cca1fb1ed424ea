import fsp from "node:fs/promises";
import path from "node:path";

/** Files unlinked at once: bounds the open requests, not the names held. */
const BATCH = 512;

/**
 * `rm -rf` whose memory grows with the widest directory, not the whole tree: fs.rm's recursive
 * mode lists every directory at once (a 200k-file image tree took tens of MB just to delete).
 * Symlinks are removed, never followed. A missing path is fine.
 *
 * Each directory is listed with one readdir (no fs.Dir handle): an import once hung for good
 * with a Dir open on a one-entry directory, no fs request pending and the event loop idle.
 */
export async function removeTree(target: string): Promise<void> {
  const stat = await fsp.lstat(target).catch(() => null);
  if (!stat) return;
  if (!stat.isDirectory()) {
    await fsp.rm(target, { force: true });
    return;
  }
  const entries = await fsp
    .readdir(target, { withFileTypes: true })
    .catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [];
      throw err;
    });
  const dirs: string[] = [];
  const files: string[] = [];
  for (const entry of entries)
    (entry.isDirectory() ? dirs : files).push(path.join(target, entry.name));
  entries.length = 0;
  for (let i = 0; i < files.length; i += BATCH) {
    // A filesystem without d_type reports directories as unknown: those go the slow way.
    await Promise.all(
      files.slice(i, i + BATCH).map((f) =>
        fsp.rm(f, { force: true }).catch((err: NodeJS.ErrnoException) => {
          if (err.code === "ERR_FS_EISDIR" || err.code === "EISDIR") return removeTree(f);
          throw err;
        }),
      ),
    );
  }
  for (const d of dirs) await removeTree(d);
  await fsp.rmdir(target).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}
