import { z } from "zod";
import { Empty, NameParam, type MethodSpec } from "./common.js";

/** What banger kept of the image's OCI config (validated when it was pulled or imported). */
export const ImageConfig = z.object({
  entrypoint: z.array(z.string()).nullable(),
  cmd: z.array(z.string()).nullable(),
  /** KEY=VALUE, keys shell variable names, no newline in a value: applied to user commands. */
  env: z.array(z.string()),
  /** Absolute; where user commands start when no workspace is given. */
  workingDir: z.string().nullable(),
  exposedPorts: z.array(z.string()),
  user: z.string().nullable(),
  /** What was dropped from the config, and why. */
  warnings: z.array(z.string()),
});

export const ImageInfo = z.object({
  id: z.string(),
  name: z.string(),
  kernel: z.string().nullable(),
  rootfsPath: z.string(),
  source: z.string().nullable(),
  digest: z.string().nullable(),
  sizeBytes: z.number().int().nullable(),
  managed: z.boolean(),
  createdAt: z.string(),
  /** The init the image boots with, picked when it was finalised; null: its /sbin/init. */
  init: z.string().nullable(),
  /** The image's OCI config; null for images without one (built, registered, older). */
  config: ImageConfig.nullable(),
});

const PruneResult = z.object({
  freedBytes: z.number().int(),
  blobs: z.number().int(),
  dir: z.string(),
  dryRun: z.boolean(),
});

export const imageMethods = {
  "image.list": { params: Empty, result: z.array(ImageInfo), summary: "Local images." },
  "image.show": { params: NameParam, result: ImageInfo, summary: "One image by name." },
  "image.build": {
    params: z
      .object({
        name: z.string().optional(),
        suite: z.string().optional(),
        packages: z.array(z.string()).optional(),
        sizeBytes: z.number().int().positive().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary: "Build the default Debian image locally with mmdebstrap.",
    progress: true,
  },
  "image.build.dockerfile": {
    params: z
      .object({
        name: z.string().min(1),
        file: z.string().min(1),
        context: z.string().min(1).optional(),
        buildArgs: z.array(z.string()).optional(),
        insecureRegistry: z.boolean().optional(),
        kernelRef: z.string().optional(),
        sizeBytes: z.number().int().positive().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary:
      "Build a Dockerfile with Buildah (RUN runs on the daemon's host) and import the result like an oci archive.",
    progress: true,
  },
  "image.pull": {
    params: z
      .object({
        ref: z.string().min(1),
        name: z.string().optional(),
        kernelRef: z.string().optional(),
        sizeBytes: z.number().int().positive().optional(),
        insecureRegistry: z.boolean().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary: "Pull a catalog bundle or an OCI image into a bootable ext4.",
    progress: true,
  },
  "image.import": {
    params: z
      .object({
        path: z.string().min(1),
        name: z.string().optional(),
        kernelRef: z.string().optional(),
        sizeBytes: z.number().int().positive().optional(),
        stdin: z.boolean().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary:
      "Import a docker-archive, oci-archive or OCI layout directory into a bootable ext4, checked like a pull.",
    progress: true,
  },
  "image.register": {
    params: z
      .object({
        name: z.string().min(1),
        rootfs: z.string().min(1),
        kernelRef: z.string().optional(),
        kernel: z.string().optional(),
        initrd: z.string().optional(),
        modules: z.string().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary: "Register an existing rootfs.ext4 (unmanaged) with a kernel.",
  },
  "image.delete": {
    params: NameParam,
    result: z.object({ deleted: z.string() }),
    summary: "Remove an image not used by any VM.",
  },
  "image.promote": {
    params: NameParam,
    result: ImageInfo,
    summary: "Copy an unmanaged image into the managed store.",
  },
  "image.cache.prune": {
    params: z.object({ dryRun: z.boolean().optional() }).strict(),
    result: PruneResult,
    summary: "Empty the OCI blob cache.",
  },
} as const satisfies Record<string, MethodSpec>;

export type ImageInfo = z.infer<typeof ImageInfo>;
export type ImageConfig = z.infer<typeof ImageConfig>;
