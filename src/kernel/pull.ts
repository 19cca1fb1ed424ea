import fsp from "node:fs/promises";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { KernelInfo } from "../api/methods.js";
import { fetchBundleToStaging, type FetchProgress } from "../util/bundle-fetch.js";
import { isKernelBundleMember } from "./bundle.js";
import { findCatalogEntry, loadKernelCatalog } from "./catalog.js";
import type { KernelContext, KernelOpProgress } from "./context.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { deriveKernel } from "./derive.js";
import { readKernelDir } from "./kernel-dir.js";

/** `kernel pull`: a catalog bundle fetched and verified, or debian-cloud derived locally. */
export async function pullKernel(
  ctx: KernelContext,
  name: string,
  opts: { force?: boolean; progress?: KernelOpProgress; signal?: AbortSignal },
): Promise<KernelInfo> {
  const replace = ctx.checkReplace(name, opts.force ?? false);
  const progress = opts.progress ?? (() => {});
  const catalog = await loadKernelCatalog(ctx.deps.env);
  const entry = findCatalogEntry(catalog, name);
  await fsp.mkdir(ctx.deps.layout.kernelsDir, { recursive: true });

  if (!entry) {
    if (name !== DISTRO_KERNEL_NAME) {
      const known = [...catalog.entries.map((e) => e.name), DISTRO_KERNEL_NAME].join(", ");
      throw new BangerError(
        ErrorCode.NotFound,
        `no kernel "${name}" in the catalog`,
        `available: ${known} ('banger kernel list --available')`,
      );
    }
    return deriveKernel(ctx, replace, progress);
  }

  const staging = await fetchBundleToStaging(
    { url: entry.tarball_url, sha256: entry.tarball_sha256, sizeBytes: entry.size_bytes },
    ctx.dirFor(name),
    {
      keep: isKernelBundleMember,
      validate: async (dir) => void (await readKernelDir(dir)),
      onProgress: (p: FetchProgress) =>
        progress({ stage: "download", message: name, current: p.current, total: p.total }),
      ...(opts.signal ? { signal: opts.signal } : {}),
    },
  );
  try {
    progress({ stage: "install", message: name });
    const manifest = await ctx.manifestFor(
      name,
      staging,
      entry.tarball_url,
      entry.kernel_version,
      null,
    );
    return await ctx.publish(name, staging, manifest, replace);
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}
