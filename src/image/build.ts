import path from "node:path";
import type { ImageInfo } from "../api/methods.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { bootstrapDebian } from "./build/debian.js";
import type { ImageContext } from "./context.js";
import type { Progress } from "./model.js";

const MiB = 2 ** 20;
/**
 * Free space a built image keeps on its root filesystem beyond what it holds: the guest's
 * /tmp, /var and what `apt-get install` adds live there (the repo is on the work disk).
 * The ext4 file is sparse and VMs' disks copy-on-write, so unused room costs next to nothing.
 */
export const BUILT_IMAGE_FREE_BYTES = 1024 * MiB;

/** `image build`: a Debian root filesystem from mmdebstrap, finalised like a pulled image. */
export async function buildImage(
  ctx: ImageContext,
  name: string,
  opts: {
    suite?: string | undefined;
    packages?: string[] | undefined;
    sizeBytes?: number | undefined;
  },
  progress: Progress,
  signal?: AbortSignal,
): Promise<ImageInfo> {
  const suite = opts.suite ?? "bookworm";
  return ctx.exclusive(name, async () => {
    const limits = await ctx.limits();
    return ctx.create(name, async (staging) => {
      const tarball = path.join(staging, "rootfs.tar");
      progress({ stage: "bootstrap", message: `mmdebstrap ${suite} (a few minutes)` });
      await bootstrapDebian({
        suite,
        extraPackages: opts.packages ?? [],
        outputTar: tarball,
        runner: ctx.deps.runner,
        isRoot: ctx.deps.isRoot ?? process.getuid?.() === 0,
        mirror: ctx.deps.env.BANGER_DEBIAN_MIRROR,
        progress: (message) => progress({ stage: "bootstrap", message }),
        ...(signal ? { signal } : {}),
      });
      // Without --size, finalisation sizes it from what the tree takes on ext4 (the tarball's
      // 512-byte blocks undercount small files), never as if the user had given that size.
      const result = await ctx.finalise(
        [tarball],
        staging,
        opts.sizeBytes,
        limits,
        progress,
        null,
        opts.sizeBytes === undefined ? BUILT_IMAGE_FREE_BYTES : undefined,
      );
      return {
        rootfs: result.rootfs,
        sizeBytes: result.sizeBytes,
        source: `mmdebstrap:${suite}`,
        digest: null,
        kernelRef: DISTRO_KERNEL_NAME,
        init: result.init,
        config: null,
      };
    });
  });
}
