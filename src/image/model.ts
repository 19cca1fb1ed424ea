import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";
import { ImageConfig, type ImageInfo } from "../api/methods.js";
import type { ImageRow } from "../store/store.js";
import { BundleEntryBase } from "../util/catalog.js";
import type { ImageLimits } from "./limits.js";

/** What an image is to banger: its name rule, manifest, catalog entry, API shape, the OCI seam. */

export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export const ImageCatalogEntry = BundleEntryBase.extend({ kernel_ref: z.string() });
export type ImageCatalogEntry = z.infer<typeof ImageCatalogEntry>;

/** manifest.json inside an image bundle and next to every managed rootfs. */
export const ImageManifest = z.object({
  name: z.string(),
  kernel_ref: z.string().nullable(),
  source: z.string().nullable().optional(),
  distro: z.string().optional(),
  arch: z.string().optional(),
  size_bytes: z.number().int().optional(),
  /** The init picked at finalisation; absent: /sbin/init. */
  init: z.string().optional(),
  /** The image's OCI config as kept at pull or import; absent: none. One that does not parse is ignored. */
  config: ImageConfig.optional().catch(undefined),
});
export type ImageManifest = z.infer<typeof ImageManifest>;

export type Progress = (report: {
  stage: string;
  message?: string;
  current?: number;
  total?: number;
}) => void;

export interface PullRequest {
  ref: string;
  name?: string | undefined;
  kernelRef?: string | undefined;
  sizeBytes?: number | undefined;
  insecureRegistry?: boolean | undefined;
}

/** The OCI side of `image pull`: resolve a reference and fetch its layers (oldest first) into local files. */
export interface OciPuller {
  /** Default local name for a reference, e.g. debian:bookworm → debian-bookworm. */
  defaultName(ref: string): string;
  /**
   * `readConfig` gets the image config JSON (size and digest verified against the manifest)
   * before any layer is requested: what it throws refuses the image with nothing downloaded.
   */
  fetchLayers<C>(
    req: PullRequest,
    progress: Progress,
    signal: AbortSignal | undefined,
    limits: ImageLimits,
    readConfig: (config: Record<string, unknown>, canonical: string) => C,
  ): Promise<{
    digest: string;
    canonical: string;
    layers: string[];
    /** What readConfig made of the config. */
    config: C;
  }>;
}

export function imageInfo(row: ImageRow): ImageInfo {
  return {
    id: row.id,
    name: row.name,
    kernel: row.kernelRef,
    rootfsPath: row.rootfsPath,
    source: row.source,
    digest: row.digest,
    sizeBytes: row.sizeBytes,
    managed: row.managed,
    createdAt: row.createdAt,
    init: row.init,
    config: row.config,
  };
}

export function checkImageName(name: string): void {
  if (!IMAGE_NAME.test(name)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid image name ${JSON.stringify(name)}`,
      "use lower-case letters, digits, '.', '_' and '-' (at most 63), e.g. debian-bookworm",
    );
  }
}
