// One tar member of a layer applied to the staging tree: whiteouts, opaque markers, files,
// directories, links; ownership, modes and capabilities recorded in the entry table.
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type tar from "tar-stream";
import type { EntryDb } from "../../disk/entries.js";
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../../disk/entry-meta.js";
import { formatBytes, limitError, type ImageLimits } from "../limits.js";
import { HOSTILE_NAME, layerError, normaliseLayerPath, relativeStaysInside } from "./layer-path.js";
import { checkDir, ensureParent, removeTree } from "./staging-tree.js";

/** Files up to this size are buffered and written in one call; larger ones are streamed. */
const SMALL_FILE = 1024 * 1024;

/** One member of a layer as the tar extractor yields it. */
export type LayerMember = tar.Extract extends AsyncIterable<infer S> ? S : never;

export async function applyEntry(
  root: string,
  entries: EntryDb,
  entry: LayerMember,
  limits: ImageLimits,
  state: { bytes: number },
  signal: AbortSignal,
): Promise<void> {
  const h = entry.header;
  const rel = normaliseLayerPath(h.name);
  // tar-stream yields null for a size it cannot parse, then waits for data forever.
  if (!Number.isSafeInteger(h.size) || h.size < 0)
    throw layerError(rel, "its size field is invalid");
  // Likewise null for an unparsable uid/gid; ext4 takes 32-bit ids.
  for (const [field, value] of [
    ["uid", h.uid],
    ["gid", h.gid],
  ] as const) {
    if (value !== undefined && !(Number.isInteger(value) && value >= 0 && value < 2 ** 32))
      throw layerError(rel, `its ${field} field is invalid`);
  }
  // Only files carry data; tar-stream waits forever on a directory (or link, ...) that claims some.
  const carriesData = h.type === "file" || h.type === "contiguous-file" || !h.type;
  if (h.size > 0 && !carriesData)
    throw layerError(rel, `a ${h.type} entry cannot carry data (it declares ${h.size} bytes)`);
  if (rel === "") {
    // The root directory itself: record its metadata, nothing to write.
    entries.set("", {
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      mode: S_IFDIR | ((h.mode ?? 0o755) & 0o7777),
    });
    entry.resume();
    return;
  }
  const base = path.posix.basename(rel);
  const dir = path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel);
  if (base.startsWith(".wh.")) {
    entry.resume();
    if (base === ".wh..wh..opq") {
      await checkDir(root, entries, dir, rel, "an opaque marker", "refuse");
      entries.addOpaque(dir);
      return;
    }
    // Other .wh..wh. names are aufs bookkeeping (hardlink dirs), not whiteouts.
    if (base.startsWith(".wh..wh.")) return;
    const name = base.slice(4);
    if (name === "" || name === "." || name === "..")
      throw layerError(rel, `whiteout of "${name}" names no file`);
    await removeTree(root, entries, dir ? `${dir}/${name}` : name, rel);
    return;
  }
  const size = h.size ?? 0;
  if (size > limits.maxImageBytes - state.bytes + 512) {
    entry.resume();
    throw limitError(
      `member "${rel}" declares ${size} bytes, past the image's ${formatBytes(limits.maxImageBytes)}`,
      "max_image_size",
    );
  }
  await ensureParent(root, entries, rel);
  const abs = path.join(root, rel);
  const perm = (h.mode ?? 0o644) & 0o7777;
  const owner = { uid: h.uid ?? 0, gid: h.gid ?? 0 };
  const capability = paxCapability(h);
  // The parent is a real directory now, so this lstat sees the tree's own entry, if any. Every
  // path in the tree is in the table, so only known paths need one (creation is O_EXCL-strict).
  const existing = entries.has(rel) ? await fsp.lstat(abs).catch(() => null) : null;
  switch (h.type) {
    case "directory":
      if (existing && !existing.isDirectory()) await removeTree(root, entries, rel, rel);
      if (!existing?.isDirectory()) await fsp.mkdir(abs, { mode: 0o755 });
      entries.set(rel, { ...owner, mode: S_IFDIR | perm });
      entry.resume();
      return;
    case "file":
    case "contiguous-file":
    case null:
    case undefined: {
      if (existing) await removeTree(root, entries, rel, rel);
      // Owner-writable on disk so later layers can replace it; the exact mode is re-applied in ext4.
      // "wx": never opens anything already there (a symlink least of all).
      const diskMode = (perm & 0o777) | 0o600;
      // With the signal: the layer may fail (and the member be destroyed) during an await above.
      if (size <= SMALL_FILE) {
        const chunks: Buffer[] = [];
        const collect = new Writable({
          write(chunk: Buffer, _enc, done) {
            chunks.push(chunk);
            done();
          },
        });
        await pipeline(entry, collect, { signal });
        await fsp.writeFile(abs, Buffer.concat(chunks), { mode: diskMode, flag: "wx" });
      } else {
        await pipeline(entry, fs.createWriteStream(abs, { mode: diskMode, flags: "wx" }), {
          signal,
        });
      }
      entries.set(
        rel,
        { ...owner, mode: S_IFREG | perm, ...(capability ? { capability } : {}) },
        size,
      );
      return;
    }
    case "symlink": {
      entry.resume();
      const target = h.linkname ?? "";
      if (!target.startsWith("/") && !relativeStaysInside(rel, target)) {
        throw layerError(rel, `symlink to "${target}" leaves the image`);
      }
      if (target === "" || HOSTILE_NAME.test(target) || Buffer.byteLength(target) > 4000)
        throw layerError(
          rel,
          "the symlink's target is empty, too long, or has a control character or a double quote",
        );
      if (existing) await removeTree(root, entries, rel, rel);
      await fsp.symlink(target, abs);
      entries.set(rel, { ...owner, mode: S_IFLNK | 0o777 });
      return;
    }
    case "link": {
      entry.resume();
      const target = normaliseLayerPath(h.linkname ?? "");
      const targetDir = path.posix.dirname(target) === "." ? "" : path.posix.dirname(target);
      const targetMeta = target === "" ? undefined : entries.get(target);
      const notAFile = () =>
        layerError(rel, `hardlink to "${h.linkname}", which is not a file in the image`);
      const targetType = targetMeta ? targetMeta.mode & S_IFMT : 0;
      if (targetType !== S_IFREG && targetType !== S_IFLNK) throw notAFile();
      // The target must be reached without a symlink and be the tree's own regular file.
      if ((await checkDir(root, entries, targetDir, rel, "a hardlink", "refuse")) !== "ok")
        throw notAFile();
      const targetStat = await fsp.lstat(path.join(root, target)).catch(() => null);
      if (!targetStat?.isFile() && !targetStat?.isSymbolicLink()) throw notAFile();
      if (target === rel) return;
      if (target.startsWith(`${rel}/`))
        throw layerError(rel, `hardlink to "${h.linkname}" would replace its own target`);
      if (existing) await removeTree(root, entries, rel, rel);
      await fsp.link(path.join(root, target), abs);
      entries.set(rel, { ...targetMeta! });
      return;
    }
    default:
      // Device nodes and fifos: the guest's udev/devtmpfs provides devices.
      entry.resume();
      return;
  }
}

/** `SCHILY.xattr.security.capability` from a PAX header, as raw bytes. */
function paxCapability(h: tar.Header): Buffer | undefined {
  const pax = (h as { pax?: Record<string, string> }).pax;
  const value = pax?.["SCHILY.xattr.security.capability"];
  if (value === undefined) return undefined;
  // tar-stream decodes PAX values as UTF-8; bytes >= 0x80 do not survive that, and a
  // vfs_cap_data is exactly 20 (v2) or 24 (v3) bytes, so a damaged value is dropped.
  const bytes = Buffer.from(value, "utf8");
  return bytes.length === 20 || bytes.length === 24 ? bytes : undefined;
}
