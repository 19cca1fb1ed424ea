import fs from "node:fs";
import path from "node:path";
import { Readable, Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { BangerError, ErrorCode } from "../../api/errors.js";
import { EntryDb } from "../../disk/entries.js";
import { S_IFDIR, S_IFMT } from "../../disk/entry-meta.js";
import {
  DEFAULT_IMAGE_LIMITS,
  ensureFreeSpace,
  formatBytes,
  limitError,
  type ImageLimits,
} from "../limits.js";
import { decompressor, sniffCompression } from "./compression.js";
import { applyEntry, type LayerMember } from "./layer-entry.js";
import { checkDir, removeTree } from "./staging-tree.js";

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

/** Free space on the staging filesystem is checked again after every this many bytes. */
const FREE_SPACE_EVERY = 64 * 1024 * 1024;

/**
 * A layer blob's streams: the file, then its decompressor (gzip or zstd, by magic bytes) if
 * any. They go into one pipeline: a bare .pipe() leaves the file open when the decompressor
 * fails (one descriptor lost per corrupt layer, until the daemon has none left).
 */
async function openLayer(file: string): Promise<[Readable] | [Readable, Transform]> {
  const unpack = decompressor(await sniffCompression(file));
  const raw = fs.createReadStream(file);
  return unpack ? [raw, unpack] : [raw];
}

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
