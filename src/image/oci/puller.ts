import fsp from "node:fs/promises";
import type { Layout } from "../../paths/layout.js";
import type { OciPuller, Progress, PullRequest } from "../model.js";
import { ensureFreeSpace, formatBytes, limitError, type ImageLimits } from "../limits.js";
import { BlobCache } from "./blob-cache.js";
import { defaultImageName, formatReference, parseReference } from "./reference.js";
import { RegistryClient } from "./registry.js";

/** `image pull` for OCI references: resolve linux/amd64, fetch each layer through the verified cache. */
export function createOciPuller(deps: { layout: Layout; env: NodeJS.ProcessEnv }): OciPuller {
  const cache = new BlobCache(deps.layout.ociBlobsDir);
  return {
    defaultName: (ref) => defaultImageName(parseReference(ref)),
    async fetchLayers(
      req: PullRequest,
      progress: Progress,
      _signal,
      limits: ImageLimits,
      readConfig,
    ) {
      const ref = parseReference(req.ref);
      const client = new RegistryClient({
        insecureRegistries: req.insecureRegistry ? [ref.registry] : [],
      });
      progress({ stage: "resolve", message: formatReference(ref) });
      const { digest, manifest } = await client.resolveManifest(ref);
      const total = manifest.layers.reduce((n, l) => n + l.size, 0);
      checkDeclaredSizes(manifest.layers, limits);
      // Small and verified like a manifest (never cached): before the layers, so a bad one costs nothing.
      const canonical = `${formatReference(ref)}@${digest}`;
      const config = readConfig(await client.fetchConfig(ref, manifest.config), canonical);
      // Only what the cache lacks is downloaded; it must fit before the first byte is written.
      const missing = manifest.layers.filter((l) => !cache.has(l.digest));
      await fsp.mkdir(cache.dir, { recursive: true });
      await ensureFreeSpace(
        cache.dir,
        missing.reduce((n, l) => n + l.size, 0),
        `the layers of ${formatReference(ref)}`,
      );
      let done = 0;
      const layers: string[] = [];
      for (const [i, layer] of manifest.layers.entries()) {
        const before = done;
        const file = await client.fetchBlob(ref, layer, cache, (n) =>
          progress({
            stage: "layers",
            message: `layer ${i + 1}/${manifest.layers.length}`,
            current: before + n,
            total,
          }),
        );
        done += layer.size;
        progress({
          stage: "layers",
          message: `layer ${i + 1}/${manifest.layers.length}`,
          current: done,
          total,
        });
        layers.push(file);
      }
      return { digest, canonical, layers, config };
    },
  };
}

/** Declared sizes come from an untrusted manifest: past a bound, nothing is downloaded. */
export function checkDeclaredSizes(
  layers: Array<{ digest: string; size: number }>,
  limits: ImageLimits,
) {
  for (const layer of layers) {
    if (layer.size > limits.maxLayerBytes)
      throw limitError(
        `layer ${layer.digest} declares ${formatBytes(layer.size)}, more than the ${formatBytes(limits.maxLayerBytes)} a layer may have`,
        "max_layer_size",
      );
  }
  const total = layers.reduce((n, l) => n + l.size, 0);
  if (total > limits.maxImageBytes)
    throw limitError(
      `the image's layers declare ${formatBytes(total)} together, more than the ${formatBytes(limits.maxImageBytes)} an image may have`,
      "max_image_size",
    );
}
