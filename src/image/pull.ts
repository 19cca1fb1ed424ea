import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import { hasExt4Magic } from "../disk/ext4.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { fetchBundleToStaging } from "../util/bundle-fetch.js";
import { loadCatalog } from "../util/catalog.js";
import type { ImageContext } from "./context.js";
import { recheckImageConfig, summariseImageConfig } from "./image-config.js";
import { ImageCatalogEntry, ImageManifest, type Progress, type PullRequest } from "./model.js";

/** `image pull`: a catalog name fetches its bundle; anything else is an OCI reference. */
export async function pullImage(
  ctx: ImageContext,
  req: PullRequest,
  progress: Progress,
  signal?: AbortSignal,
): Promise<ImageInfo> {
  const catalog = await loadCatalog(
    "image",
    ImageCatalogEntry,
    ctx.deps.env,
    "BANGER_IMAGE_CATALOG",
    "images.json",
  );
  const entry = catalog.entries.find((e) => e.name === req.ref);
  if (entry) return pullBundle(ctx, entry, req, progress, signal);
  const name = req.name ?? ctx.deps.oci.defaultName(req.ref);
  const limits = await ctx.limits();
  return ctx.exclusive(name, () =>
    ctx.create(name, async (staging) => {
      const fetched = await ctx.deps.oci.fetchLayers(req, progress, signal, limits, (json, ref) =>
        summariseImageConfig(json, `the config of ${ref}`),
      );
      const config = fetched.config;
      // Hardlink the cached layers into staging so a cache prune mid-pull cannot pull them away.
      const layers: string[] = [];
      for (const [i, layer] of fetched.layers.entries()) {
        const local = path.join(staging, `layer-${i}`);
        await fsp.link(layer, local).catch(() => fsp.copyFile(layer, local));
        layers.push(local);
      }
      const result = await ctx.finalise(layers, staging, req.sizeBytes, limits, progress, config);
      return {
        rootfs: result.rootfs,
        sizeBytes: result.sizeBytes,
        source: fetched.canonical,
        digest: fetched.digest,
        kernelRef: req.kernelRef ?? DISTRO_KERNEL_NAME,
        init: result.init,
        config,
      };
    }),
  );
}

/** A catalog bundle: a verified tarball holding rootfs.ext4 (and its manifest), used as it is. */
async function pullBundle(
  ctx: ImageContext,
  entry: ImageCatalogEntry,
  req: PullRequest,
  progress: Progress,
  signal?: AbortSignal,
): Promise<ImageInfo> {
  const name = req.name ?? entry.name;
  return ctx.exclusive(name, () =>
    ctx.create(name, async (staging) => {
      const fetched = await fetchBundleToStaging(
        { url: entry.tarball_url, sha256: entry.tarball_sha256, sizeBytes: entry.size_bytes },
        path.join(staging, "bundle"),
        {
          keep: (m) => m === "rootfs.ext4" || m === "manifest.json",
          validate: async (dir, files) => {
            if (
              !files.includes("rootfs.ext4") ||
              !(await hasExt4Magic(path.join(dir, "rootfs.ext4")))
            ) {
              throw new BangerError(
                ErrorCode.InvalidParams,
                `bundle for "${entry.name}" has no ext4 rootfs.ext4`,
                "the bundle is broken; nothing was installed",
              );
            }
          },
          onProgress: (p) =>
            progress({
              stage: "download",
              message: entry.name,
              current: p.current,
              total: p.total,
            }),
          ...(signal ? { signal } : {}),
        },
      );
      let manifest: ImageManifest | null = null;
      try {
        manifest = ImageManifest.parse(
          JSON.parse(await fsp.readFile(path.join(fetched, "manifest.json"), "utf8")),
        );
      } catch {
        manifest = null;
      }
      await fsp.rename(path.join(fetched, "rootfs.ext4"), path.join(staging, "rootfs.ext4"));
      await fsp.rm(fetched, { recursive: true, force: true });
      const sizeBytes = (await fsp.stat(path.join(staging, "rootfs.ext4"))).size;
      const kernelRef = req.kernelRef ?? manifest?.kernel_ref ?? entry.kernel_ref;
      return {
        rootfs: path.join(staging, "rootfs.ext4"),
        sizeBytes,
        source: entry.tarball_url,
        digest: `sha256:${entry.tarball_sha256}`,
        kernelRef,
        init: manifest?.init ?? null,
        config: manifest?.config
          ? recheckImageConfig(manifest.config, `the config in the bundle of ${entry.name}`)
          : null,
      };
    }),
  );
}
