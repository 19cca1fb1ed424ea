import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Readable, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import tar from "tar-stream";
import { DecompressStream } from "zstd-napi";
import { BangerError, ErrorCode } from "../../api/errors.js";
import { removeTree as removeFlat } from "../../util/remove-tree.js";
import { EntryDb, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../../disk/entries.js";
import {
  DEFAULT_IMAGE_LIMITS,
  ensureFreeSpace,
  formatBytes,
  limitError,
  type ImageLimits,
} from "../limits.js";

export { S_IFDIR, S_IFLNK, S_IFREG, type EntryMeta } from "../../disk/entries.js";

export interface FlattenResult {
  /** Path (relative, no leading slash) → metadata, for every path in the tree; close() it when done. */
  entries: EntryDb;
  /** Bytes the tree will take on an ext4 filesystem, roughly (4 KiB blocks, one per inode). */
  estimatedBytes: number;
}

export interface FlattenOptions {
  limits?: ImageLimits;
  /** Where the entry table lives (a scratch SQLite file); default: beside `root`. */
  entriesFile?: string;
}

/** Files up to this size are buffered and written in one call; larger ones are streamed. */
const SMALL_FILE = 1024 * 1024;
/** Free space on the staging filesystem is checked again after every this many bytes. */
const FREE_SPACE_EVERY = 64 * 1024 * 1024;
/** realDirs is a cache: past this many paths it starts again, so it never grows with the image. */
const REAL_DIRS_CACHE = 4096;

function layerError(member: string, why: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `image layer member "${member}": ${why}`,
    "the image is malformed or hostile; nothing was installed",
  );
}

/**
 * Names debugfs cannot take safely in a quoted script argument: control
 * characters (newline included) and double quotes. Backslashes and single
 * quotes are fine (debugfs takes them literally) and real images need them:
 * systemd unit names such as system-systemd\x2dcryptsetup.slice.
 */
// eslint-disable-next-line no-control-regex
const HOSTILE_NAME = /[\u0000-\u001f\u007f"]/;

/** `./usr//bin/` → `usr/bin`; rejects absolute paths, `..` and debugfs-hostile names. */
export function normaliseLayerPath(name: string): string {
  if (HOSTILE_NAME.test(name)) {
    throw layerError(
      JSON.stringify(name).slice(1, -1),
      "the name has a control character or a double quote, which cannot be written to ext4 safely",
    );
  }
  if (name.startsWith("/")) throw layerError(name, "absolute path");
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw layerError(name, "path leaves the image ('..')");
  // Linux's NAME_MAX and PATH_MAX: longer names cannot be written (ENAMETOOLONG otherwise).
  if (parts.some((p) => Buffer.byteLength(p) > 255) || Buffer.byteLength(name) > 4000)
    throw layerError(
      name.slice(0, 80) + "...",
      "a name is longer than Linux allows (255 bytes a component)",
    );
  return parts.join("/");
}

/** Does a relative link target stay inside the tree when resolved from `member`'s directory? */
function relativeStaysInside(member: string, target: string): boolean {
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(member), target));
  return resolved !== ".." && !resolved.startsWith("../");
}

/**
 * A layer blob's streams: the file, then its decompressor (gzip or zstd, by magic bytes) if
 * any. They go into one pipeline: a bare .pipe() leaves the file open when the decompressor
 * fails (one descriptor lost per corrupt layer, until the daemon has none left).
 */
async function openLayer(file: string): Promise<[Readable] | [Readable, Transform]> {
  const handle = await fsp.open(file, "r");
  const magic = Buffer.alloc(4);
  try {
    await handle.read(magic, 0, 4, 0);
  } finally {
    await handle.close();
  }
  const raw = fs.createReadStream(file);
  if (magic[0] === 0x1f && magic[1] === 0x8b) return [raw, zlib.createGunzip()];
  if (magic.readUInt32LE(0) === 0xfd2fb528) return [raw, new DecompressStream()];
  return [raw];
}

/** One member of a layer as the tar extractor yields it. */
type LayerMember = tar.Extract extends AsyncIterable<infer S> ? S : never;

/** What to do when a path to remove lies under a symlink. */
type UnderSymlink = "refuse" | "skip";

/**
 * Applies image layers, oldest first, into `root` (an empty directory):
 * whiteouts delete, opaque markers empty a directory of lower layers' entries,
 * hardlinks are linked, devices and fifos are skipped, and ownership, modes and
 * capabilities are recorded from the tar headers (files on disk stay owned by
 * us and writable; the ext4 step re-applies the recorded metadata).
 *
 * Nothing a layer says makes us touch a path outside `root`: every path we
 * create, remove, link or list has each of its parent components lstat'ed as
 * a real directory first, so no symlink is ever followed. A whiteout or opaque
 * marker under a symlink refuses the layer (a real layer diff never has one:
 * deleting through a symlink records the whiteout at the resolved path).
 */
export async function flattenLayers(
  layerFiles: string[],
  root: string,
  opts: FlattenOptions = {},
): Promise<FlattenResult> {
  const limits = opts.limits ?? DEFAULT_IMAGE_LIMITS;
  const entries = new EntryDb(opts.entriesFile ?? `${root}.entries.db`);
  try {
    await applyLayers(layerFiles, root, entries, limits);
    // Container-runtime markers make software inside think it runs in a container.
    for (const marker of [".dockerenv", "run/.containerenv"]) {
      await removeTree(root, entries, marker, marker, "skip");
    }
    return { entries, estimatedBytes: entries.estimatedBytes() };
  } catch (err) {
    entries.close();
    throw err;
  }
}

// Directories known to be real (not symlinks) in the tree: saves an lstat per path component.
// Bounded: a cache, cleared whenever a tree is removed or it grows past REAL_DIRS_CACHE.
const realDirsOf = new WeakMap<EntryDb, Set<string>>();
function realDirs(entries: EntryDb): Set<string> {
  let set = realDirsOf.get(entries);
  if (!set || set.size > REAL_DIRS_CACHE) {
    set = new Set();
    realDirsOf.set(entries, set);
  }
  return set;
}

/**
 * Is every component of `dir` (relative; "" is the root) a real directory? "missing" when
 * one is absent or not a directory (nothing is there to touch); a symlink refuses, or with
 * "skip" reports "symlink".
 */
async function checkDir(
  root: string,
  entries: EntryDb,
  dir: string,
  member: string,
  what: string,
  onSymlink: UnderSymlink,
): Promise<"ok" | "missing" | "symlink"> {
  if (dir === "") return "ok";
  const known = realDirs(entries);
  if (known.has(dir)) return "ok";
  let current = "";
  for (const part of dir.split("/")) {
    current = current ? `${current}/${part}` : part;
    if (known.has(current)) continue;
    const stat = await fsp.lstat(path.join(root, current)).catch(() => null);
    if (stat?.isSymbolicLink()) {
      if (onSymlink === "skip") return "symlink";
      throw layerError(member, `${what} through the symlink ${current} is refused`);
    }
    if (!stat?.isDirectory()) return "missing";
    known.add(current);
  }
  return "ok";
}

/** Removes `rel` (a symlink itself, never its target) and everything under it, if it is in the tree. */
async function removeTree(
  root: string,
  entries: EntryDb,
  rel: string,
  member: string,
  onSymlink: UnderSymlink = "refuse",
): Promise<void> {
  const parent = path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel);
  if ((await checkDir(root, entries, parent, member, "removing", onSymlink)) !== "ok") return;
  // rm never follows a symlink it meets, the last component included.
  await removeFlat(path.join(root, rel));
  entries.deleteTree(rel);
  realDirsOf.delete(entries);
}

/** Parent directories must be real directories inside the tree, never symlinks; missing ones are made. */
async function ensureParent(root: string, entries: EntryDb, rel: string): Promise<void> {
  const parent = path.posix.dirname(rel);
  const known = realDirs(entries);
  if (parent === "." || known.has(parent)) return;
  let current = "";
  for (const part of parent.split("/")) {
    current = current ? `${current}/${part}` : part;
    if (known.has(current)) continue;
    const abs = path.join(root, current);
    const stat = await fsp.lstat(abs).catch(() => null);
    if (stat?.isSymbolicLink())
      throw layerError(rel, `its parent ${current} is a symlink; writing through it is refused`);
    if (!stat?.isDirectory()) {
      if (stat) await removeTree(root, entries, current, rel);
      await fsp.mkdir(abs, { mode: 0o755 });
      if (!entries.has(current)) entries.set(current, { uid: 0, gid: 0, mode: S_IFDIR | 0o755 });
    }
    realDirs(entries).add(current);
  }
}

/** A stream that counts bytes and fails once the total over all layers passes the bound. */
function byteCounter(state: { bytes: number }, limits: ImageLimits, onBytes: () => Promise<void>) {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      state.bytes += chunk.length;
      if (state.bytes > limits.maxImageBytes) {
        done(
          limitError(
            `the image unpacks to more than ${formatBytes(limits.maxImageBytes)}`,
            "max_image_size",
          ),
        );
        return;
      }
      onBytes().then(() => done(null, chunk), done);
    },
  });
}

async function applyLayers(
  layerFiles: string[],
  root: string,
  entries: EntryDb,
  limits: ImageLimits,
): Promise<void> {
  const state = { bytes: 0, entries: 0, checkedAt: 0 };
  // Free space is checked before each layer and again every FREE_SPACE_EVERY bytes unpacked.
  const checkSpace = async (force: boolean) => {
    if (!force && state.bytes - state.checkedAt < FREE_SPACE_EVERY) return;
    state.checkedAt = state.bytes;
    await ensureFreeSpace(root, FREE_SPACE_EVERY, "unpacking the image's layers");
  };

  for (const [index, layerFile] of layerFiles.entries()) {
    entries.layer = index + 1;
    await checkSpace(true);
    const extract = tar.extract();
    let current: LayerMember | null = null;
    // Aborted when the layer fails: a member's data must not be awaited once the extractor is gone.
    const abort = new AbortController();
    const consume = (async () => {
      for await (const entry of extract) {
        current = entry;
        if (++state.entries > limits.maxEntries) {
          throw limitError(
            `the image has more than ${limits.maxEntries} entries (files, directories, links)`,
            "max_entries",
          );
        }
        await applyEntry(root, entries, entry, limits, state, abort.signal);
      }
    })();
    try {
      await Promise.all([
        pipeline([
          ...(await openLayer(layerFile)),
          byteCounter(state, limits, () => checkSpace(false)),
          extract,
        ]),
        consume,
      ]);
    } catch (err) {
      // The other side of the pipe must not keep running (or leave a rejection unhandled).
      // A member being written would otherwise wait forever for the rest of its data.
      const cause = err instanceof Error ? err : new Error(String(err));
      abort.abort(cause);
      (current as LayerMember | null)?.destroy(cause);
      extract.destroy();
      await settled(consume, 10_000);
      if (err instanceof BangerError) throw err;
      throw new BangerError(
        ErrorCode.InvalidParams,
        `cannot read image layer ${path.basename(layerFile)}: ${(err as Error).message}`,
        "the image is malformed; nothing was installed",
      );
    }
    await applyOpaqueDirs(root, entries);
  }
}

/** Waits for `p` to settle, at most `ms`: cleanup after an error must not hang on it. */
async function settled(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
    }),
  ]);
  clearTimeout(timer);
}

/** Opaque directories keep only what this layer put in them. */
async function applyOpaqueDirs(root: string, entries: EntryDb): Promise<void> {
  for (const dir of entries.opaqueDirs()) {
    const marker = dir ? `${dir}/.wh..wh..opq` : ".wh..wh..opq";
    // The directory itself must be real: listing a symlink would list a host directory.
    if ((await checkDir(root, entries, dir, marker, "an opaque directory", "refuse")) !== "ok")
      continue;
    let removed: string | null = null;
    for (const [rel, meta] of entries.lowerLayersBelow(dir)) {
      if (removed !== null && rel.startsWith(`${removed}/`)) continue;
      // A lower directory this layer wrote into stays; its other lower entries go (they follow in order).
      if ((meta.mode & S_IFMT) === S_IFDIR && entries.currentLayerBelow(rel)) continue;
      await removeTree(root, entries, rel, marker);
      removed = rel;
    }
  }
}

async function applyEntry(
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
