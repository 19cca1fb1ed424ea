import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

async function newestMtime(dir: string): Promise<number> {
  let newest = 0;
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    const t = entry.isDirectory() ? await newestMtime(full) : (await fs.stat(full)).mtimeMs;
    newest = Math.max(newest, t);
  }
  return newest;
}

/**
 * Builds dist/ exactly as `make build` does, unless it is already newer than
 * src/. Test files run in parallel processes: a lock keeps two of them from
 * rewriting dist/ while another test's daemon is loading it.
 */
export async function ensureBuilt(root: string): Promise<void> {
  const stamp = path.join(root, "dist", ".build-stamp");
  const lock = path.join(root, ".build-lock");
  const deadline = Date.now() + 300_000;
  for (;;) {
    const built = await fs.stat(stamp).then(
      (s) => s.mtimeMs,
      () => 0,
    );
    if (built > (await newestMtime(path.join(root, "src")))) return;
    const handle = await fs.open(lock, "wx").catch(() => null);
    if (handle) {
      try {
        // tsc, the CLI bundle and the stamp.
        await run("sh", ["scripts/build.sh"], { cwd: root, timeout: 180_000 });
        return;
      } finally {
        await handle.close();
        await fs.rm(lock, { force: true });
      }
    }
    if (Date.now() > deadline)
      throw new Error(`${lock} is held for too long; remove it if no build is running`);
    await new Promise((r) => setTimeout(r, 500));
  }
}
