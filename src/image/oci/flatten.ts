import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";
import tar from "tar-stream";
import { DecompressStream } from "zstd-napi";
import { BangerError, ErrorCode } from "../../api/errors.js";

/** Ownership and exact mode (file type bits included) of one path in the flattened tree. */
export interface EntryMeta {
  uid: number;
  gid: number;
  /** st_mode: type bits | permission bits (incl. setuid, setgid, sticky). */
  mode: number;
  /** Raw `security.capability` xattr, when the layer carried one. */
  capability?: Buffer;
}

export interface FlattenResult {
  /** Path (relative, no leading slash) → metadata, for every path in the tree. */
  entries: Map<string, EntryMeta>;
  /** Bytes the tree will take on an ext4 filesystem, roughly (4 KiB blocks, one per inode). */
  estimatedBytes: number;
}

const S_IFMT = 0o170000;
/** Files up to this size are buffered and written in one call; larger ones are streamed. */
const SMALL_FILE = 1024 * 1024;
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;

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
  return parts.join("/");
}

/** Does a relative link target stay inside the tree when resolved from `member`'s directory? */
function relativeStaysInside(member: string, target: string): boolean {
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(member), target));
  return resolved !== ".." && !resolved.startsWith("../");
}

/** Opens a layer blob: gzip, zstd or plain tar, by magic bytes. */
async function openLayer(file: string): Promise<Readable> {
  const handle = await fsp.open(file, "r");
  const magic = Buffer.alloc(4);
  await handle.read(magic, 0, 4, 0);
  await handle.close();
  const raw = fs.createReadStream(file);
  if (magic[0] === 0x1f && magic[1] === 0x8b) return raw.pipe(zlib.createGunzip());
  if (magic.readUInt32LE(0) === 0xfd2fb528) return raw.pipe(new DecompressStream());
  return raw;
}

/**
 * Applies image layers, oldest first, into `root` (an empty directory):
 * whiteouts delete, opaque markers empty a directory of lower layers' entries,
 * hardlinks are linked, devices and fifos are skipped, and ownership, modes and
 * capabilities are recorded from the tar headers (files on disk stay owned by
 * us and writable; the ext4 step re-applies the recorded metadata).
 */
export async function flattenLayers(layerFiles: string[], root: string): Promise<FlattenResult> {
  const entries = new Map<string, EntryMeta>();
  // Directories known to be real (not symlinks) in the tree: saves an lstat per path component.
  const realDirs = new Set<string>([""]);
  const removeTree = async (rel: string) => {
    await fsp.rm(path.join(root, rel), { recursive: true, force: true });
    entries.delete(rel);
    realDirs.delete(rel);
    const prefix = `${rel}/`;
    for (const key of entries.keys()) if (key.startsWith(prefix)) entries.delete(key);
    for (const key of realDirs) if (key.startsWith(prefix)) realDirs.delete(key);
  };

  /** Parent directories must be real directories inside the tree, never symlinks. */
  const ensureParent = async (rel: string) => {
    const parent = path.posix.dirname(rel);
    if (parent === "." || realDirs.has(parent)) return;
    const parts = parent.split("/");
    let current = "";
    for (const part of parts) {
      current = current ? `${current}/${part}` : part;
      if (realDirs.has(current)) continue;
      const abs = path.join(root, current);
      const stat = await fsp.lstat(abs).catch(() => null);
      if (stat?.isDirectory()) {
        realDirs.add(current);
        continue;
      }
      if (stat?.isSymbolicLink())
        throw layerError(rel, `its parent ${current} is a symlink; writing through it is refused`);
      if (stat) await removeTree(current);
      await fsp.mkdir(abs, { mode: 0o755 });
      realDirs.add(current);
      if (!entries.has(current)) entries.set(current, { uid: 0, gid: 0, mode: S_IFDIR | 0o755 });
    }
  };

  for (const layerFile of layerFiles) {
    const thisLayer = new Set<string>();
    const opaqueDirs: string[] = [];
    const extract = tar.extract();
    const consume = (async () => {
      for await (const entry of extract) {
        const h = entry.header;
        const rel = normaliseLayerPath(h.name);
        if (rel === "") {
          // The root directory itself: record its metadata, nothing to write.
          entries.set("", {
            uid: h.uid ?? 0,
            gid: h.gid ?? 0,
            mode: S_IFDIR | ((h.mode ?? 0o755) & 0o7777),
          });
          entry.resume();
          continue;
        }
        const base = path.posix.basename(rel);
        const dir = path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel);
        if (base === ".wh..wh..opq") {
          opaqueDirs.push(dir);
          entry.resume();
          continue;
        }
        if (base.startsWith(".wh.")) {
          const victim = dir ? `${dir}/${base.slice(4)}` : base.slice(4);
          await removeTree(victim);
          entry.resume();
          continue;
        }
        await ensureParent(rel);
        const abs = path.join(root, rel);
        const perm = (h.mode ?? 0o644) & 0o7777;
        const owner = { uid: h.uid ?? 0, gid: h.gid ?? 0 };
        const capability = paxCapability(h);
        // Everything in the tree is in `entries`, so only known paths need an lstat.
        const existing = entries.has(rel) ? await fsp.lstat(abs).catch(() => null) : null;
        switch (h.type) {
          case "directory":
            if (existing && !existing.isDirectory()) await removeTree(rel);
            if (!existing || !existing.isDirectory()) await fsp.mkdir(abs, { mode: 0o755 });
            realDirs.add(rel);
            entries.set(rel, { ...owner, mode: S_IFDIR | perm });
            entry.resume();
            break;
          case "file":
          case "contiguous-file":
          case null:
          case undefined:
            if (existing) await removeTree(rel);
            // Owner-writable on disk so later layers can replace it; the exact mode is re-applied in ext4.
            if ((h.size ?? 0) <= SMALL_FILE) {
              const chunks: Buffer[] = [];
              for await (const chunk of entry) chunks.push(chunk as Buffer);
              await fsp.writeFile(abs, Buffer.concat(chunks), { mode: (perm & 0o777) | 0o600 });
            } else {
              await pipeline(entry, fs.createWriteStream(abs, { mode: (perm & 0o777) | 0o600 }));
            }
            entries.set(rel, {
              ...owner,
              mode: S_IFREG | perm,
              ...(capability ? { capability } : {}),
            });
            break;
          case "symlink": {
            const target = h.linkname ?? "";
            if (!target.startsWith("/") && !relativeStaysInside(rel, target)) {
              throw layerError(rel, `symlink to "${target}" leaves the image`);
            }
            if (existing) await removeTree(rel);
            await fsp.symlink(target, abs);
            entries.set(rel, { ...owner, mode: S_IFLNK | 0o777 });
            entry.resume();
            break;
          }
          case "link": {
            const target = normaliseLayerPath(h.linkname ?? "");
            const targetMeta = entries.get(target);
            if (!targetMeta || (targetMeta.mode & S_IFMT) === S_IFDIR) {
              throw layerError(
                rel,
                `hardlink to "${h.linkname}", which is not a file in the image`,
              );
            }
            if (existing) await removeTree(rel);
            await fsp.link(path.join(root, target), abs);
            entries.set(rel, { ...targetMeta });
            entry.resume();
            break;
          }
          default:
            // Device nodes and fifos: the guest's udev/devtmpfs provides devices.
            entry.resume();
            continue;
        }
        thisLayer.add(rel);
      }
    })();
    try {
      await Promise.all([pipeline(await openLayer(layerFile), extract), consume]);
    } catch (err) {
      if (err instanceof BangerError) throw err;
      throw new BangerError(
        ErrorCode.InvalidParams,
        `cannot read image layer ${path.basename(layerFile)}: ${(err as Error).message}`,
      );
    }
    // Opaque directories keep only what this layer put in them.
    for (const dir of opaqueDirs) {
      const abs = path.join(root, dir);
      for (const child of await fsp.readdir(abs).catch(() => [] as string[])) {
        const rel = dir ? `${dir}/${child}` : child;
        if (!thisLayer.has(rel) && ![...thisLayer].some((p) => p.startsWith(`${rel}/`)))
          await removeTree(rel);
      }
    }
  }

  // Container-runtime markers make software inside think it runs in a container.
  for (const marker of [".dockerenv", "run/.containerenv"]) await removeTree(marker);

  let estimatedBytes = 0;
  for (const [rel, meta] of entries) {
    estimatedBytes += 4096;
    if ((meta.mode & S_IFMT) === S_IFREG) {
      const size = (await fsp.lstat(path.join(root, rel)).catch(() => null))?.size ?? 0;
      estimatedBytes += Math.ceil(size / 4096) * 4096;
    }
  }
  return { entries, estimatedBytes };
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
