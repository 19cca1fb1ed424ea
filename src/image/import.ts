import fsp from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { openRegularFile } from "../util/regular-file.js";
import type { ImageContext, MadeImage } from "./context.js";
import { summariseImageConfig } from "./image-config.js";
import type { ImageLimits } from "./limits.js";
import { IMAGE_NAME, type Progress } from "./model.js";
import { readArchiveImage, type ArchiveImage } from "./oci/archive-image.js";
import { spoolArchive, type MemberSource } from "./oci/archive-members.js";
import { decompressor, sniffCompression } from "./oci/compression.js";
import { layoutDirectory } from "./oci/layout-dir.js";

export interface ImportRequest {
  /** Absolute path of a docker-archive or oci-archive file, or of an OCI layout directory. */
  path: string;
  name?: string | undefined;
  kernelRef?: string | undefined;
  sizeBytes?: number | undefined;
  /** The CLI saved its stdin to `path`: the image's source says `-`, and --name is needed. */
  stdin?: boolean | undefined;
}

/**
 * `image import`: what `docker save`, `podman save` and `skopeo copy` write, through the same
 * checks and finalisation as a pull. Every member is copied into the staging dir as it is read
 * (nothing is held in memory), the image's blobs are verified there, and only those copies are
 * unpacked; any failure removes the staging dir with everything in it.
 */
export async function importImage(
  ctx: ImageContext,
  req: ImportRequest,
  progress: Progress,
  signal?: AbortSignal,
): Promise<ImageInfo> {
  if (!path.isAbsolute(req.path))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `the archive ${JSON.stringify(req.path)} is not an absolute path`,
      "the CLI resolves paths for you; callers of the RPC must send absolute ones",
    );
  const name = req.name ?? nameFromPath(req);
  const limits = await ctx.limits();
  const label = req.stdin ? "-" : req.path;
  return ctx.exclusive(name, () =>
    ctx.create(name, (staging) =>
      archiveIntoStaging(
        ctx,
        staging,
        {
          ...req,
          what: req.stdin ? "the archive on stdin" : req.path,
          source: (format) => `${format}:${label}`,
        },
        limits,
        progress,
        signal,
      ),
    ),
  );
}

/** What `archiveIntoStaging` reads, and how the image will name where it came from. */
export interface ArchiveSource {
  path: string;
  stdin?: boolean | undefined;
  kernelRef?: string | undefined;
  sizeBytes?: number | undefined;
  /** What the config's errors name: the archive, or the build that wrote it. */
  what: string;
  source: (format: ArchiveImage["format"]) => string;
}

/**
 * An archive or OCI layout into `staging`'s rootfs: every member spooled, verified, then
 * finalised. What an import and a Dockerfile build (buildah's output) share.
 */
export async function archiveIntoStaging(
  ctx: ImageContext,
  staging: string,
  req: ArchiveSource,
  limits: ImageLimits,
  progress: Progress,
  signal?: AbortSignal,
): Promise<MadeImage> {
  const src = await openSource(req, path.join(staging, "archive"), limits, progress, signal);
  progress({ stage: "verify", message: "manifest, config and layers" });
  const image = await readArchiveImage(src, limits);
  const config = summariseImageConfig(image.config, `the config of ${req.what}`);
  const result = await ctx.finalise(image.layers, staging, req.sizeBytes, limits, progress, config);
  return {
    rootfs: result.rootfs,
    sizeBytes: result.sizeBytes,
    source: req.source(image.format),
    digest: image.digest,
    kernelRef: req.kernelRef ?? DISTRO_KERNEL_NAME,
    init: result.init,
    config,
  };
}

/** The default name: the file's or directory's, without its archive extension. */
function nameFromPath(req: ImportRequest): string {
  const hint = "name it with --name, e.g. --name myapp";
  if (req.stdin)
    throw new BangerError(ErrorCode.InvalidParams, "an archive from stdin needs a --name", hint);
  const name = path
    .basename(req.path)
    .replace(/\.(tar|tar\.gz|tgz|tar\.zst|oci|oci\.tar|docker\.tar)$/i, "")
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, "-")
    .replace(/^[^a-z0-9]+/, "")
    .slice(0, 63);
  if (!IMAGE_NAME.test(name))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `cannot make an image name from ${JSON.stringify(path.basename(req.path))}`,
      hint,
    );
  return name;
}

/** A directory is an OCI layout; a file is a tar (gzip or zstd compressed, or not). */
async function openSource(
  req: { path: string; stdin?: boolean | undefined },
  spool: string,
  limits: ImageLimits,
  progress: Progress,
  signal: AbortSignal | undefined,
): Promise<MemberSource> {
  const what = req.stdin ? "the archive on stdin" : `archive ${req.path}`;
  // The user named the path: a symlink to it is followed; what it reaches is checked below.
  const stat = await fsp.stat(req.path).catch(() => null);
  if (stat?.isDirectory())
    return layoutDirectory(await fsp.realpath(req.path), spool, limits, `OCI layout ${req.path}`);
  const file = await openRegularFile(req.path, "the archive", { follow: true });
  let total: number | undefined = file.size;
  let streams: Readable[];
  try {
    const unpack = decompressor(await sniffCompression(file.handle));
    streams = [file.handle.createReadStream({ start: 0 }), ...(unpack ? [unpack] : [])];
    // Progress counts the tar's members: against a compressed file's size it would run past 100%.
    if (unpack) total = undefined;
  } catch (err) {
    await file.handle.close();
    throw err;
  }
  try {
    return await spoolArchive(
      streams,
      spool,
      limits,
      what,
      (n) => progress({ stage: "read", message: what, current: n, ...(total ? { total } : {}) }),
      signal,
    );
  } finally {
    // The read stream closes it when it ends; this covers a failure before it ever started.
    await file.handle.close().catch(() => {});
  }
}
