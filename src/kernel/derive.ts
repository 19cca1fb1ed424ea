import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import type { KernelInfo } from "../api/methods.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import type { KernelContext, KernelOpProgress } from "./context.js";
import { deriveDistroKernel } from "./debian.js";

/** `kernel pull debian-cloud` without a catalog entry: built from this host's kernel package. */
export async function deriveKernel(
  ctx: KernelContext,
  replace: boolean,
  progress: KernelOpProgress,
): Promise<KernelInfo> {
  const staging = `${ctx.dirFor(DISTRO_KERNEL_NAME)}.staging-${randomBytes(4).toString("hex")}`;
  await fsp.mkdir(staging, { recursive: true });
  try {
    const derive = ctx.deps.deriveDistroKernel ?? deriveDistroKernel;
    const derived = await derive(staging, {
      runner: ctx.deps.runner,
      tmpRoot: ctx.deps.layout.kernelsDir,
      progress: (stage, message) => progress({ stage, ...(message ? { message } : {}) }),
    });
    const manifest = await ctx.manifestFor(
      DISTRO_KERNEL_NAME,
      staging,
      `apt:${derived.package}`,
      derived.version,
      null,
    );
    return await ctx.publish(DISTRO_KERNEL_NAME, staging, manifest, replace);
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}
