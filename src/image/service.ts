import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import { DEFAULT_IMAGE_NAME } from "../config/defaults.js";
import { existingOrMade } from "../util/wait.js";
import { buildImage } from "./build.js";
import { buildFromDockerfile, type DockerfileBuildRequest } from "./build-dockerfile.js";
import { ImageContext, type ImageServiceDeps } from "./context.js";
import { deleteImage } from "./delete.js";
import { imageInfo, type Progress, type PullRequest } from "./model.js";
import { pruneBlobCache } from "./oci/blob-cache.js";
import { promoteImage } from "./promote.js";
import { importImage, type ImportRequest } from "./import.js";
import { pullImage } from "./pull.js";
import { registerImage, type RegisterRequest } from "./register.js";

export type { ImageServiceDeps } from "./context.js";
export {
  checkImageName,
  IMAGE_NAME,
  ImageCatalogEntry,
  imageInfo,
  ImageManifest,
  type OciPuller,
  type Progress,
  type PullRequest,
} from "./model.js";

/**
 * Images: the locally built default, OCI pulls, catalog bundles, registered files. One file per
 * verb (build.ts, build-dockerfile.ts, pull.ts, import.ts, register.ts, promote.ts, delete.ts) sharing an ImageContext.
 */
export class ImageService {
  private readonly ctx: ImageContext;

  constructor(deps: ImageServiceDeps) {
    this.ctx = new ImageContext(deps);
  }

  list(): ImageInfo[] {
    return this.ctx.deps.store.listImages().map(imageInfo);
  }

  show(name: string): ImageInfo {
    return imageInfo(this.ctx.row(name));
  }

  build(
    opts: {
      name?: string | undefined;
      suite?: string | undefined;
      packages?: string[] | undefined;
      sizeBytes?: number | undefined;
    },
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    return buildImage(this.ctx, opts.name ?? DEFAULT_IMAGE_NAME, opts, progress, signal);
  }

  /** A Dockerfile built by buildah, then imported like an oci archive. */
  buildDockerfile(
    req: DockerfileBuildRequest,
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    return buildFromDockerfile(this.ctx, req, progress, signal);
  }

  /** A catalog name fetches its bundle; anything else is an OCI reference. */
  pull(req: PullRequest, progress: Progress = () => {}, signal?: AbortSignal): Promise<ImageInfo> {
    return pullImage(this.ctx, req, progress, signal);
  }

  /** A docker-archive, oci-archive or OCI layout directory, checked and finalised like a pull. */
  import(
    req: ImportRequest,
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    return importImage(this.ctx, req, progress, signal);
  }

  /** Registers an existing ext4 file in place (unmanaged: banger never deletes the file). */
  register(req: RegisterRequest): Promise<ImageInfo> {
    return registerImage(this.ctx, req);
  }

  delete(name: string): Promise<{ deleted: string }> {
    return deleteImage(this.ctx, name);
  }

  /** Copies a registered image's file into banger's store, so it no longer depends on the original. */
  promote(name: string): Promise<ImageInfo> {
    return promoteImage(this.ctx, name);
  }

  /** Empties the OCI blob cache without disturbing a pull in flight (it holds its own links). */
  cachePrune(
    dryRun: boolean,
  ): Promise<{ freedBytes: number; blobs: number; dir: string; dryRun: boolean }> {
    return pruneBlobCache(this.ctx.deps.layout.ociBlobsDir, dryRun);
  }

  /** The image a VM asks for; the default one is built on first use. */
  async ensure(
    name: string,
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    // Two first-time creates at once: the second waits for the first one's build rather than
    // failing Busy; if that build fails (or its caller cancels it), the waiter builds itself.
    return existingOrMade({
      existing: () => {
        const row = this.ctx.deps.store.getImageByName(name);
        return row ? imageInfo(row) : null;
      },
      inflight: () => this.ctx.inflight.get(name),
      waiting: () =>
        progress({ stage: "image", message: `waiting for the build of ${name} already running` }),
      make: () => {
        if (name !== DEFAULT_IMAGE_NAME)
          throw new BangerError(
            ErrorCode.NotFound,
            `no image named ${JSON.stringify(name)}`,
            `'banger image pull <ref> --name ${name}' or 'banger image list'`,
          );
        progress({
          stage: "image",
          message: `building the default image ${name} (first run only)`,
        });
        return this.build({ name }, progress, signal);
      },
      tooMany: (n) =>
        new BangerError(
          ErrorCode.Busy,
          `image "${name}" did not appear after ${n} builds by other requests`,
          "retry; 'banger image build' shows why it fails",
        ),
      signal,
    });
  }
}
