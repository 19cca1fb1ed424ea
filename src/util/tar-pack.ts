import fs from "node:fs";
import fsp from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import type tar from "tar-stream";

/** One member to add to a tar-stream pack, read from `file` on the host. */
export interface PackedFile {
  name: string;
  file: string;
  kind: "directory" | "file" | "symlink";
  mode: number;
  uid: number;
  gid: number;
  mtime?: Date;
}

/** Adds one member: a directory, a symlink (its target read now) or a file's bytes, streamed. */
export async function packFile(pack: tar.Pack, m: PackedFile): Promise<void> {
  const base = {
    name: m.name,
    mode: m.mode & 0o7777,
    uid: m.uid,
    gid: m.gid,
    ...(m.mtime ? { mtime: m.mtime } : {}),
  };
  if (m.kind === "directory") {
    pack.entry({ ...base, type: "directory" });
  } else if (m.kind === "symlink") {
    pack.entry({ ...base, type: "symlink", linkname: await fsp.readlink(m.file) });
  } else {
    const size = (await fsp.stat(m.file)).size;
    await pipeline(fs.createReadStream(m.file), pack.entry({ ...base, type: "file", size }));
  }
}
