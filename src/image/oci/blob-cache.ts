import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";

/**
 * Content-addressed blobs at `<dir>/<hex>`. A blob enters only after its
 * sha256 matched: it is written to a temp file beside its final name, then
 * renamed. Pure re-download avoidance: safe to delete at any time.
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

  async put(
    digest: string,
    source: AsyncIterable<Uint8Array>,
    onBytes?: (total: number) => void,
  ): Promise<string> {
    const final = this.pathOf(digest);
    await fsp.mkdir(this.dir, { recursive: true });
    const tmp = `${final}.${randomBytes(4).toString("hex")}.partial`;
    const hash = createHash("sha256");
    let total = 0;
    const out = await fsp.open(tmp, "w");
    try {
      for await (const chunk of source) {
        hash.update(chunk);
        total += chunk.length;
        await out.write(chunk);
        onBytes?.(total);
      }
      await out.close();
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
