import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageConfig, ImageInfo } from "../api/methods.js";
import { loadConfig } from "../config/config.js";
import type { KernelService } from "../kernel/service.js";
import type { Layout } from "../paths/layout.js";
import type { ImageRow, Store } from "../store/store.js";
import type { CommandRunner } from "../system/runner.js";
import { publishDir } from "../util/bundle-fetch.js";
import { removeTree } from "../util/remove-tree.js";
import { InflightByName } from "../util/wait.js";
import { finaliseImage, type FinaliseResult } from "./finalise.js";
import type { ImageLimits } from "./limits.js";
import {
  checkImageName,
  imageInfo,
  type ImageManifest,
  type OciPuller,
  type Progress,
} from "./model.js";

export interface ImageServiceDeps {
  store: Store;
  layout: Layout;
  env: NodeJS.ProcessEnv;
  runner: CommandRunner;
  kernels: KernelService;
  oci: OciPuller;
  isRoot?: boolean;
  now?: () => Date;
}

/** What a new managed image made from files, before it is published. */
export interface MadeImage {
  rootfs: string;
  sizeBytes: number;
  source: string;
  digest: string | null;
  kernelRef: string;
  /** The init recorded on the image (FinaliseResult.init); null for /sbin/init. */
  init: string | null;
  /** The image's OCI config (pull, import, a bundle that has one); null: none. */
  config: ImageConfig | null;
}

/** What the image verbs share: one creation per name, staging and publishing, the config bounds. */
export class ImageContext {
  /** Builds and pulls in flight, by image name: a second one for the name waits or is refused. */
  readonly inflight = new InflightByName();

  constructor(readonly deps: ImageServiceDeps) {}

  /** The [image] bounds from config.toml, read per operation like the rest of the config. */
  async limits(): Promise<ImageLimits> {
    return (await loadConfig(this.deps.layout.configFile)).image;
  }

  now(): string {
    return (this.deps.now?.() ?? new Date()).toISOString();
  }

  row(name: string): ImageRow {
    const row = this.deps.store.getImageByName(name);
    if (!row)
      throw new BangerError(
        ErrorCode.NotFound,
        `no image named ${JSON.stringify(name)}`,
        "'banger image list' shows what exists",
      );
    return row;
  }

  /** One build/pull per image name at a time, and never over an existing name. */
  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    checkImageName(name);
    if (this.inflight.get(name)) {
      throw new BangerError(
        ErrorCode.Busy,
        `image "${name}" is being created right now`,
        "wait for it to finish",
      );
    }
    if (this.deps.store.getImageByName(name)) {
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `an image named "${name}" already exists`,
        `delete it first ('banger image delete ${name}') or pick another --name`,
      );
    }
    return await this.inflight.run(name, fn);
  }

  /**
   * Builds under images/<id>.staging, publishes by rename, then writes the row.
   * Any failure removes the staging dir: no half-written image is ever visible.
   */
  async create(name: string, work: (staging: string) => Promise<MadeImage>): Promise<ImageInfo> {
    const id = randomBytes(6).toString("hex");
    const finalDir = path.join(this.deps.layout.imagesDir, id);
    const staging = `${finalDir}.staging`;
    await fsp.mkdir(staging, { recursive: true });
    try {
      const made = await work(staging);
      const manifest: ImageManifest = {
        name,
        kernel_ref: made.kernelRef,
        source: made.source,
        size_bytes: made.sizeBytes,
        ...(made.init ? { init: made.init } : {}),
        ...(made.config ? { config: made.config } : {}),
      };
      await fsp.writeFile(
        path.join(staging, "manifest.json"),
        `${JSON.stringify(manifest, null, 2)}\n`,
      );
      // Only the image itself goes live; work files (layers, tarballs) stay behind and are removed.
      for (const entry of await fsp.readdir(staging)) {
        if (entry !== "rootfs.ext4" && entry !== "manifest.json")
          await removeTree(path.join(staging, entry));
      }
      await publishDir(staging, finalDir, { replace: false });
      const row: ImageRow = {
        id,
        name,
        kernelRef: made.kernelRef,
        rootfsPath: path.join(finalDir, "rootfs.ext4"),
        source: made.source,
        digest: made.digest,
        sizeBytes: made.sizeBytes,
        managed: true,
        createdAt: this.now(),
        init: made.init,
        config: made.config,
      };
      try {
        this.deps.store.insertImage(row);
      } catch (err) {
        await fsp.rm(finalDir, { recursive: true, force: true });
        throw err;
      }
      return imageInfo(row);
    } finally {
      await removeTree(staging);
    }
  }

  /** Layers (oldest first) into staging's rootfs.ext4, the same finalisation for builds and pulls. */
  finalise(
    layers: string[],
    staging: string,
    sizeBytes: number | undefined,
    limits: ImageLimits,
    progress: Progress,
    config: ImageConfig | null = null,
    freeBytes?: number,
  ): Promise<FinaliseResult> {
    return finaliseImage({
      config,
      layers,
      stagingDir: staging,
      sizeBytes,
      freeBytes,
      limits,
      runner: this.deps.runner,
      progress: (stage, message) => progress({ stage, ...(message ? { message } : {}) }),
    });
  }
}
