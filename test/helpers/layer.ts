import zlib from "node:zlib";
import tar from "tar-stream";

export interface LayerEntry {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "fifo" | "character-device";
  body?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  linkname?: string;
  pax?: Record<string, string>;
}

/** A layer tar built entry by entry (gzip'ed unless `gzip: false`), for synthetic images. */
export async function makeLayer(
  entries: LayerEntry[],
  opts: { gzip?: boolean } = {},
): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const type = e.type ?? "file";
    const body = type === "file" ? Buffer.from(e.body ?? "") : Buffer.alloc(0);
    pack.entry(
      {
        name: e.name,
        type,
        size: body.length,
        mode: e.mode ?? (type === "directory" ? 0o755 : 0o644),
        uid: e.uid ?? 0,
        gid: e.gid ?? 0,
        ...(e.linkname ? { linkname: e.linkname } : {}),
        ...(e.pax ? { pax: e.pax } : {}),
      },
      body,
    );
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks);
  return opts.gzip === false ? raw : zlib.gzipSync(raw);
}
