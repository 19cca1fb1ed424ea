import { randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { DecompressStream } from "zstd-napi";
import { BangerError, ErrorCode } from "../api/errors.js";
import { hashingTap } from "./hash-tap.js";
import { extractTarSafely } from "./safe-extract.js";

export interface BundleRef {
  /** http(s) URL, file:// URL or local path. */
  url: string;
  sha256: string;
  sizeBytes?: number | null;
}

export interface FetchProgress {
  current: number;
  total: number | undefined;
}

export interface FetchBundleOptions {
  keep(member: string): boolean;
  /** Throws when the extracted members are not a usable bundle. */
  validate(dir: string, files: string[]): Promise<void>;
  onProgress?: (p: FetchProgress) => void;
  signal?: AbortSignal;
}

/** Opens the bundle bytes: HTTP(S) with a clear error for bad statuses, or a local file. */
async function openSource(
  url: string,
  signal: AbortSignal | undefined,
): Promise<{ stream: Readable; length: number | undefined }> {
  if (/^https?:\/\//.test(url)) {
    let response: Response;
    try {
      response = await fetch(url, { signal: signal ?? null, redirect: "follow" });
    } catch (err) {
      throw new BangerError(
        ErrorCode.Precondition,
        `cannot download ${url}: ${(err as Error).message}`,
        "check the URL and your network",
      );
    }
    if (!response.ok || !response.body) {
      throw new BangerError(
        ErrorCode.NotFound,
        `cannot download ${url}: HTTP ${response.status} ${response.statusText}`,
        "the catalog may be out of date",
      );
    }
    const header = response.headers.get("content-length");
    return {
      stream: Readable.fromWeb(response.body as import("node:stream/web").ReadableStream),
      length: header ? Number(header) : undefined,
    };
  }
  const file = url.startsWith("file://") ? fileURLToPath(url) : url;
  const stat = await fsp.stat(file).catch(() => {
    throw new BangerError(ErrorCode.NotFound, `bundle ${file} does not exist`);
  });
  return { stream: fs.createReadStream(file), length: stat.size };
}

/**
 * Streams a `.tar.zst` bundle into a staging directory next to `finalDir`,
 * hashing as it goes, keeps only expected members, verifies sha256 and size,
 * then returns the staging dir for the caller to publish. On any failure the
 * staging dir is removed: nothing partial is ever left behind.
 */
export async function fetchBundleToStaging(
  ref: BundleRef,
  finalDir: string,
  opts: FetchBundleOptions,
): Promise<string> {
  await fsp.mkdir(path.dirname(finalDir), { recursive: true });
  const staging = `${finalDir}.staging-${randomBytes(4).toString("hex")}`;
  await fsp.mkdir(staging);
  try {
    const { stream, length } = await openSource(ref.url, opts.signal);
    const total = ref.sizeBytes ?? length;
    const tap = hashingTap((current) => opts.onProgress?.({ current, total }));
    const decompressed = stream.pipe(tap.stream).pipe(new DecompressStream());
    // Errors upstream of the decompressor must fail the extraction, not vanish.
    stream.on("error", (err) => decompressed.destroy(err));
    tap.stream.on("error", (err) => decompressed.destroy(err));
    let files: string[];
    try {
      ({ files } = await extractTarSafely(decompressed, staging, { keep: opts.keep }));
    } catch (err) {
      if (err instanceof BangerError) throw err;
      throw new BangerError(
        ErrorCode.InvalidParams,
        `bundle ${ref.url} is truncated or corrupt: ${(err as Error).message}`,
        "try again; if it persists the published bundle is broken",
      );
    }
    // The extraction pipeline ends only after the source has ended, so the hash has seen every byte.
    const digest = tap.digest();
    if (ref.sizeBytes != null && tap.bytes() !== ref.sizeBytes) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `bundle ${ref.url} is ${tap.bytes()} bytes, the catalog says ${ref.sizeBytes}`,
        "the download was truncated or the catalog is wrong",
      );
    }
    if (digest !== ref.sha256.toLowerCase()) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `sha256 mismatch for ${ref.url}: expected ${ref.sha256}, got ${digest}`,
        "the bundle is corrupt or was replaced; nothing was installed",
      );
    }
    await opts.validate(staging, files);
    return staging;
  } catch (err) {
    await fsp.rm(staging, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Atomically moves a fully built staging dir into place. With `replace`, the old
 * directory is moved aside first and removed only after the new one is in.
 */
export async function publishDir(
  staging: string,
  finalDir: string,
  opts: { replace: boolean },
): Promise<void> {
  let aside: string | null = null;
  if (opts.replace && fs.existsSync(finalDir)) {
    aside = `${finalDir}.old-${randomBytes(4).toString("hex")}`;
    await fsp.rename(finalDir, aside);
  }
  try {
    await fsp.rename(staging, finalDir);
  } catch (err) {
    if (aside) await fsp.rename(aside, finalDir).catch(() => {});
    await fsp.rm(staging, { recursive: true, force: true });
    if (
      (err as NodeJS.ErrnoException).code === "ENOTEMPTY" ||
      (err as NodeJS.ErrnoException).code === "EEXIST"
    ) {
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `${finalDir} already exists`,
        "use --force to replace it",
      );
    }
    throw err;
  }
  if (aside) await fsp.rm(aside, { recursive: true, force: true });
}
