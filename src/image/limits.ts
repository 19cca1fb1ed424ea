import fsp from "node:fs/promises";
import { BangerError, ErrorCode } from "../api/errors.js";
import { formatSizeBytes } from "../util/size.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** How large an image may be; an image or registry is untrusted, so every dimension has a bound. */
export interface ImageLimits {
  /** Compressed bytes of one layer, as declared and as downloaded. */
  maxLayerBytes: number;
  /** Uncompressed bytes of all layers together (the tar streams after decompression). */
  maxImageBytes: number;
  /** Tar entries of all layers together (files, directories, links, whiteouts, ...). */
  maxEntries: number;
}

/**
 * Sized for real images with room to spare: the largest public images (CUDA and ML stacks)
 * have layers of a few GiB compressed and 10-20 GiB unpacked; a full Debian desktop has
 * about 300k paths.
 */
export const DEFAULT_IMAGE_LIMITS: ImageLimits = {
  maxLayerBytes: 16 * GiB,
  maxImageBytes: 48 * GiB,
  maxEntries: 2_000_000,
};

/** What writing must leave free on the filesystem it writes to. */
export const MIN_FREE_BYTES = 256 * MiB;

export const formatBytes = formatSizeBytes;

/** Bytes an unprivileged writer may still use on the filesystem holding `dir`. */
export async function freeBytes(dir: string): Promise<number> {
  const s = await fsp.statfs(dir);
  return s.bavail * s.bsize;
}

/** Refuses to start writing `need` bytes under `dir` unless they fit with MIN_FREE_BYTES to spare. */
export async function ensureFreeSpace(dir: string, need: number, what: string): Promise<void> {
  const free = await freeBytes(dir);
  if (free - need < MIN_FREE_BYTES) {
    throw new BangerError(
      ErrorCode.Precondition,
      `not enough disk space for ${what}: it needs about ${formatBytes(need)} and ${dir} has ${formatBytes(free)} free`,
      `free some space (${formatBytes(need + MIN_FREE_BYTES)} wanted), e.g. 'banger image cache prune'`,
    );
  }
}

/** The error for an image past one of its bounds; names the config key that raises it. */
export function limitError(what: string, key: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `${what}; nothing was installed`,
    `if the image is genuine, raise [image] ${key} in config.toml (docs/config.md)`,
  );
}
