import type { Layout } from "../../paths/layout.js";
import type { OciPuller, Progress, PullRequest } from "../service.js";
import { BlobCache } from "./blob-cache.js";
import { defaultImageName, formatReference, parseReference } from "./reference.js";
import { RegistryClient } from "./registry.js";

/** `image pull` for OCI references: resolve linux/amd64, fetch each layer through the verified cache. */
export function createOciPuller(deps: { layout: Layout; env: NodeJS.ProcessEnv }): OciPuller {
  const cache = new BlobCache(deps.layout.ociBlobsDir);
  return {
    defaultName: (ref) => defaultImageName(parseReference(ref)),
    async fetchLayers(req: PullRequest, progress: Progress) {
      const ref = parseReference(req.ref);
      const client = new RegistryClient({
        insecureRegistries: req.insecureRegistry ? [ref.registry] : [],
      });
      progress({ stage: "resolve", message: formatReference(ref) });
      const { digest, manifest } = await client.resolveManifest(ref);
      const total = manifest.layers.reduce((n, l) => n + l.size, 0);
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
      return { digest, canonical: `${formatReference(ref)}@${digest}`, layers };
    },
  };
}
