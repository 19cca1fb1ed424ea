import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";

/**
 * Content-addressed blobs at `<dir>/<hex>`. A blob enters only after its
 * size and sha256 matched: it is written to a temp file beside its final
 * name, then renamed. Pure re-download avoidance: safe to delete at any time.
 */
export class BlobCache {
  constructor(readonly dir: string) {}

  pathOf(digest: string): string {
    const m = /^sha256:([0-9a-f]{64})$/.exec(digest);
    if (!m)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `unsupported digest "${digest}" (only sha256 is supported)`,
      );
    return path.join(this.dir, m[1]!);
  }

  has(digest: string): boolean {
    return fs.existsSync(this.pathOf(digest));
  }

  /** Stores `source` as `digest`; with `size`, reading stops as soon as the source runs past it. */
  async put(
    digest: string,
    source: AsyncIterable<Uint8Array>,
    onBytes?: (total: number) => void,
    size?: number,
  ): Promise<string> {
    const final = this.pathOf(digest);
    await fsp.mkdir(this.dir, { recursive: true });
    const tmp = `${final}.${randomBytes(4).toString("hex")}.partial`;
    const hash = createHash("sha256");
    let total = 0;
    const out = await fsp.open(tmp, "w");
    try {
      for await (const chunk of source) {
        total += chunk.length;
        // Leaving the loop cancels the source: an oversized blob is never read to its end.
        if (size !== undefined && total > size) {
          throw new BangerError(
            ErrorCode.InvalidParams,
            `blob ${digest} is larger than the ${size} bytes its descriptor declares`,
            "the registry served wrong data; nothing was cached, try again",
          );
        }
        hash.update(chunk);
        await out.write(chunk);
        onBytes?.(total);
      }
      await out.close();
      if (size !== undefined && total !== size) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          `blob ${digest} ended after ${total} of the ${size} bytes its descriptor declares`,
          "the registry served a truncated blob; nothing was cached, try again",
        );
      }
      const got = `sha256:${hash.digest("hex")}`;
      if (got !== digest) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          `digest mismatch for blob ${digest}: got ${got}`,
          "the registry served corrupt data; nothing was cached, try again",
        );
      }
      // Concurrent puts of one digest both rename verified bytes: last one wins, harmlessly.
      await fsp.rename(tmp, final);
      return final;
    } catch (err) {
      await out.close().catch(() => {});
      await fsp.rm(tmp, { force: true });
      throw err;
    }
  }
}

/** Empties the blob cache at `dir` without disturbing a pull in flight (it holds its own links). */
export async function pruneBlobCache(
  dir: string,
  dryRun: boolean,
): Promise<{ freedBytes: number; blobs: number; dir: string; dryRun: boolean }> {
  let freedBytes = 0;
  let blobs = 0;
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    const stat = await fsp.lstat(path.join(dir, name)).catch(() => null);
    if (!stat?.isFile()) continue;
    freedBytes += stat.size;
    blobs++;
  }
  if (!dryRun && fs.existsSync(dir)) {
    const aside = `${dir}.prune-${randomBytes(4).toString("hex")}`;
    await fsp.rename(dir, aside);
    await fsp.mkdir(dir, { recursive: true });
    await fsp.rm(aside, { recursive: true, force: true });
  }
  return { freedBytes, blobs, dir, dryRun };
}
