import type { BlobCache } from "./blob-cache.js";
import type { ImageReference } from "./reference.js";
import { authorize, parseChallenge } from "./registry-auth.js";
import { fetchBlob, fetchConfig } from "./registry-blobs.js";
import { resolveManifest, type Descriptor, type ResolvedManifest } from "./registry-manifests.js";
import { RegistryTransport, type Json, type RegistryDeps } from "./registry-transport.js";

export { parseChallenge } from "./registry-auth.js";
export {
  choosePlatform,
  listPlatforms,
  MEDIA,
  type Descriptor,
  type ResolvedManifest,
} from "./registry-manifests.js";
export type { RegistryDeps } from "./registry-transport.js";

/**
 * A small OCI distribution client: manifests and blobs, anonymous, Bearer token and Basic auth.
 * HTTP in registry-transport.ts, auth in registry-auth.ts, registry-manifests.ts, registry-blobs.ts.
 */
export class RegistryClient {
  private readonly http: RegistryTransport;

  constructor(deps: RegistryDeps = {}) {
    this.http = new RegistryTransport(deps, (ref, header) =>
      authorize(this.http, ref, parseChallenge(header), deps.dockerConfigFile),
    );
  }

  /** The linux/amd64 (or `platform`) image manifest for a reference, every byte verified. */
  resolveManifest(
    ref: ImageReference,
    platform = { os: "linux", architecture: "amd64" },
  ): Promise<ResolvedManifest> {
    return resolveManifest(this.http, ref, platform);
  }

  /** A blob through the cache (no request when it is there), size and digest verified. */
  fetchBlob(
    ref: ImageReference,
    descriptor: Descriptor,
    cache: BlobCache,
    onBytes?: (total: number) => void,
  ): Promise<string> {
    return fetchBlob(this.http, ref, descriptor, cache, onBytes);
  }

  /** The image config (env, entrypoint, ...) as JSON, its size and digest verified. */
  fetchConfig(ref: ImageReference, descriptor: Descriptor): Promise<Json> {
    return fetchConfig(this.http, ref, descriptor);
  }
}
