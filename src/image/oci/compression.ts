import fsp from "node:fs/promises";
import type { Transform } from "node:stream";
import zlib from "node:zlib";
import { DecompressStream } from "zstd-napi";

/** How a layer or archive file is compressed, told by its first bytes (never by its name). */
export type Compression = "none" | "gzip" | "zstd";

export function compressionOfMagic(magic: Buffer): Compression {
  if (magic[0] === 0x1f && magic[1] === 0x8b) return "gzip";
  if (magic.length >= 4 && magic.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  return "none";
}

/** The compression of `file` (a path or an open handle, read at offset 0). */
export async function sniffCompression(file: string | fsp.FileHandle): Promise<Compression> {
  const handle = typeof file === "string" ? await fsp.open(file, "r") : file;
  const magic = Buffer.alloc(4);
  try {
    const { bytesRead } = await handle.read(magic, 0, 4, 0);
    return compressionOfMagic(magic.subarray(0, bytesRead));
  } finally {
    if (typeof file === "string") await handle.close();
  }
}

/** The stream that undoes `compression`, or null when there is none. */
export function decompressor(compression: Compression): Transform | null {
  if (compression === "gzip") return zlib.createGunzip();
  if (compression === "zstd") return new DecompressStream();
  return null;
}
