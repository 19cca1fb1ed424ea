import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { BlobCache } from "./blob-cache.js";
import { formatReference, type ImageReference } from "./reference.js";

export const MEDIA = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
} as const;

const ACCEPT = [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest].join(
  ", ",
);

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os?: string; architecture?: string; variant?: string };
}

export interface ResolvedManifest {
  digest: string;
  mediaType: string;
  manifest: { config: Descriptor; layers: Descriptor[] };
}

export interface RegistryDeps {
  fetch?: typeof fetch;
  /** Docker's credential file; `auths[<host>]` supplies Basic credentials. */
  dockerConfigFile?: string;
  /** Registries reached over plain HTTP besides localhost ones. */
  insecureRegistries?: string[];
}

type Json = Record<string, unknown>;

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function isLocal(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "");
  return (
    host === "localhost" || host === "127.0.0.1" || host === "[::1]" || host.startsWith("127.")
  );
}

/** key=value pairs of a WWW-Authenticate challenge (values may be quoted). */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const space = header.indexOf(" ");
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  for (const m of header.slice(space + 1).matchAll(/([a-zA-Z_]+)="?([^",]*)"?/g))
    params[m[1]!.toLowerCase()] = m[2]!;
  return { scheme, params };
}

/** A small OCI distribution client: manifests and blobs, anonymous, Bearer token and Basic auth. */
export class RegistryClient {
  private readonly fetchFn: typeof fetch;
  private readonly tokens = new Map<string, string>();

  constructor(private readonly deps: RegistryDeps = {}) {
    this.fetchFn = deps.fetch ?? fetch;
  }

  private base(ref: ImageReference): string {
    const plain =
      isLocal(ref.registry) || (this.deps.insecureRegistries ?? []).includes(ref.registry);
    return `${plain ? "http" : "https"}://${ref.registry}`;
  }

  /** `user:pass` for a registry from ~/.docker/config.json, if any. */
  private credentials(registry: string): string | null {
    const file = this.deps.dockerConfigFile ?? path.join(os.homedir(), ".docker", "config.json");
    let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
    try {
      config = JSON.parse(fs.readFileSync(file, "utf8"));
    } catch {
      return null;
    }
    const keys =
      registry === "registry-1.docker.io"
        ? ["https://index.docker.io/v1/", "docker.io", "index.docker.io", registry]
        : [registry, `https://${registry}`, `http://${registry}`];
    for (const key of keys) {
      const entry = config.auths?.[key];
      if (entry?.auth) return Buffer.from(entry.auth, "base64").toString("utf8");
      if (entry?.username && entry.password !== undefined)
        return `${entry.username}:${entry.password}`;
    }
    return null;
  }

  private async send(url: string, init: RequestInit, ref: ImageReference): Promise<Response> {
    try {
      return await this.fetchFn(url, init);
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const detail = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new BangerError(
        ErrorCode.Precondition,
        `cannot reach registry ${ref.registry}: ${detail}`,
        isLocal(ref.registry)
          ? "is the registry running?"
          : "check the name and your network; for a plain-HTTP registry add --insecure-registry",
      );
    }
  }

  /** GET with the auth dance: anonymous first, then whatever the 401 challenge asks for. */
  private async get(
    ref: ImageReference,
    pathname: string,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    const url = `${this.base(ref)}${pathname}`;
    const scopeKey = `${ref.registry}/${ref.repository}`;
    const authed = (): Record<string, string> => {
      const token = this.tokens.get(scopeKey);
      return token ? { ...headers, authorization: token } : headers;
    };
    let response = await this.send(url, { headers: authed(), redirect: "manual" }, ref);
    if (response.status === 401) {
      const challenge = parseChallenge(response.headers.get("www-authenticate") ?? "");
      await response.body?.cancel();
      this.tokens.set(scopeKey, await this.authorize(ref, challenge));
      response = await this.send(url, { headers: authed(), redirect: "manual" }, ref);
    }
    // Blob downloads redirect to storage hosts; they must not receive our credentials.
    for (let hops = 0; hops < 5 && [301, 302, 303, 307, 308].includes(response.status); hops++) {
      const location = response.headers.get("location");
      await response.body?.cancel();
      if (!location) break;
      const next = new URL(location, url);
      const sameHost = next.host === new URL(url).host;
      response = await this.send(
        next.toString(),
        { headers: sameHost ? authed() : headers, redirect: "manual" },
        ref,
      );
    }
    if (response.status === 401 || response.status === 403) {
      await response.body?.cancel();
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry} refused access to ${ref.repository} (HTTP ${response.status})`,
        `check the name, or log in: 'docker login ${ref.registry}' (banger reads ~/.docker/config.json)`,
      );
    }
    return response;
  }

  private async authorize(
    ref: ImageReference,
    challenge: { scheme: string; params: Record<string, string> },
  ): Promise<string> {
    const creds = this.credentials(ref.registry);
    if (challenge.scheme === "basic") {
      if (!creds) {
        throw new BangerError(
          ErrorCode.Precondition,
          `registry ${ref.registry} requires credentials`,
          `run 'docker login ${ref.registry}' or add them to ~/.docker/config.json`,
        );
      }
      return `Basic ${Buffer.from(creds).toString("base64")}`;
    }
    if (challenge.scheme !== "bearer" || !challenge.params.realm) {
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry} asks for an unsupported authentication (${challenge.scheme || "none given"})`,
      );
    }
    const tokenUrl = new URL(challenge.params.realm);
    if (challenge.params.service) tokenUrl.searchParams.set("service", challenge.params.service);
    tokenUrl.searchParams.set(
      "scope",
      challenge.params.scope ?? `repository:${ref.repository}:pull`,
    );
    const headers: Record<string, string> = creds
      ? { authorization: `Basic ${Buffer.from(creds).toString("base64")}` }
      : {};
    const response = await this.send(tokenUrl.toString(), { headers }, ref);
    if (!response.ok) {
      await response.body?.cancel();
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry}: the token service refused (HTTP ${response.status})`,
        creds
          ? "check the credentials in ~/.docker/config.json"
          : `the image may be private: 'docker login ${ref.registry}'`,
      );
    }
    const body = (await response.json()) as { token?: string; access_token?: string };
    const token = body.token ?? body.access_token;
    if (!token)
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry}: the token service returned no token`,
      );
    return `Bearer ${token}`;
  }

  private async fetchManifest(
    ref: ImageReference,
    reference: string,
    expected: string | null,
  ): Promise<{ body: Buffer; digest: string; mediaType: string }> {
    const response = await this.get(ref, `/v2/${ref.repository}/manifests/${reference}`, {
      accept: ACCEPT,
    });
    if (response.status === 404) {
      await response.body?.cancel();
      throw new BangerError(
        ErrorCode.NotFound,
        `image ${formatReference(ref)} not found in registry ${ref.registry}`,
        "check the name and tag",
      );
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry} answered HTTP ${response.status} for ${formatReference(ref)}`,
      );
    }
    const body = Buffer.from(await response.arrayBuffer());
    const digest = sha256(body);
    const claimed = expected ?? response.headers.get("docker-content-digest");
    if (claimed && claimed !== digest) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `manifest digest mismatch for ${formatReference(ref)}: expected ${claimed}, got ${digest}`,
      );
    }
    const json = JSON.parse(body.toString("utf8")) as Json;
    const mediaType =
      (json.mediaType as string | undefined) ??
      response.headers.get("content-type")?.split(";")[0] ??
      "";
    return { body, digest, mediaType };
  }

  /** The linux/amd64 (or `platform`) image manifest for a reference, every byte verified. */
  async resolveManifest(
    ref: ImageReference,
    platform = { os: "linux", architecture: "amd64" },
  ): Promise<ResolvedManifest> {
    let fetched = await this.fetchManifest(ref, ref.digest ?? ref.tag ?? "latest", ref.digest);
    let json = JSON.parse(fetched.body.toString("utf8")) as Json;
    if ((json.schemaVersion as number | undefined) === 1) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${formatReference(ref)} uses the obsolete schema 1 manifest format`,
        "push it again with a current tool",
      );
    }
    if (Array.isArray(json.manifests)) {
      const entries = json.manifests as Descriptor[];
      const match = entries.find(
        (m) => m.platform?.os === platform.os && m.platform?.architecture === platform.architecture,
      );
      if (!match) {
        const have = entries
          .map((m) => `${m.platform?.os ?? "?"}/${m.platform?.architecture ?? "?"}`)
          .join(", ");
        throw new BangerError(
          ErrorCode.NotFound,
          `${formatReference(ref)} has no ${platform.os}/${platform.architecture} image (it has: ${have || "none"})`,
        );
      }
      fetched = await this.fetchManifest(ref, match.digest, match.digest);
      json = JSON.parse(fetched.body.toString("utf8")) as Json;
    }
    const config = json.config as Descriptor | undefined;
    const layers = json.layers as Descriptor[] | undefined;
    if (!config || !Array.isArray(layers)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${formatReference(ref)}: unsupported manifest (${fetched.mediaType || "unknown type"})`,
      );
    }
    return { digest: fetched.digest, mediaType: fetched.mediaType, manifest: { config, layers } };
  }

  /** A blob through the cache: no request at all when it is already there; verified before it enters. */
  async fetchBlob(
    ref: ImageReference,
    descriptor: Descriptor,
    cache: BlobCache,
    onBytes?: (total: number) => void,
  ): Promise<string> {
    if (cache.has(descriptor.digest)) return cache.pathOf(descriptor.digest);
    const response = await this.get(ref, `/v2/${ref.repository}/blobs/${descriptor.digest}`);
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new BangerError(
        response.status === 404 ? ErrorCode.NotFound : ErrorCode.Precondition,
        `registry ${ref.registry} answered HTTP ${response.status} for blob ${descriptor.digest} of ${formatReference(ref)}`,
      );
    }
    return cache.put(
      descriptor.digest,
      Readable.fromWeb(response.body as WebReadableStream<Uint8Array>),
      onBytes,
    );
  }

  /** The image config (env, entrypoint, ...) as JSON. */
  async fetchConfig(ref: ImageReference, descriptor: Descriptor): Promise<Json> {
    const response = await this.get(ref, `/v2/${ref.repository}/blobs/${descriptor.digest}`);
    const body = Buffer.from(await response.arrayBuffer());
    if (sha256(body) !== descriptor.digest)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `digest mismatch for config ${descriptor.digest}`,
      );
    return JSON.parse(body.toString("utf8")) as Json;
  }
}
