import { randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { packFile } from "./tar-pack.js";
import { CompressStream } from "zstd-napi";
import { hashingTap } from "./hash-tap.js";

export interface PackMember {
  /** Path inside the bundle. */
  name: string;
  /** File or directory on disk; directories are packed recursively. */
  from: string;
}

export interface PackedBundle {
  path: string;
  sha256: string;
  sizeBytes: number;
}

/** Regular files, directories and symlinks under `from`, as tar headers, sorted for reproducible bundles. */
async function* walk(
  name: string,
  from: string,
): AsyncGenerator<{ name: string; file: string; stat: fs.Stats }> {
  const stat = await fsp.lstat(from);
  yield { name, file: from, stat };
  if (stat.isDirectory()) {
    for (const child of (await fsp.readdir(from)).sort())
      yield* walk(`${name}/${child}`, path.join(from, child));
  }
}

/**
 * Packs members into a zstd-compressed tar in `outDir`, named by `nameFor(sha256)`
 * (content-addressed), and returns its path, sha256 and size. Owners are root
 * and times are zero, so the same input gives the same bundle.
 */
export async function packBundle(
  members: PackMember[],
  outDir: string,
  nameFor: (sha256: string) => string,
): Promise<PackedBundle> {
  await fsp.mkdir(outDir, { recursive: true });
  const tmp = path.join(outDir, `.bundle-${randomBytes(4).toString("hex")}.tmp`);
  const pack = tar.pack();
  const tap = hashingTap();
  const writing = pipeline(pack, new CompressStream(), tap.stream, fs.createWriteStream(tmp));
  try {
    for (const member of members) {
      for await (const { name, file, stat } of walk(member.name, member.from)) {
        const kind = stat.isDirectory()
          ? "directory"
          : stat.isSymbolicLink()
            ? "symlink"
            : stat.isFile()
              ? "file"
              : null;
        if (kind)
          await packFile(pack, {
            name,
            file,
            kind,
            mode: stat.mode,
            uid: 0,
            gid: 0,
            mtime: new Date(0),
          });
      }
    }
    pack.finalize();
    await writing;
    const sha256 = tap.digest();
    const final = path.join(outDir, nameFor(sha256));
    await fsp.rename(tmp, final);
    return { path: final, sha256, sizeBytes: tap.bytes() };
  } catch (err) {
    pack.destroy();
    await writing.catch(() => {});
    await fsp.rm(tmp, { force: true });
    throw err;
  }
}
