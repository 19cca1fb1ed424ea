import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { BlobCache } from "./blob-cache.js";
import { formatReference, type ImageReference } from "./reference.js";
import { explainNetworkFailure, RegistryTimeout } from "./registry-errors.js";

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
  /** A request fails when the registry sends nothing for this long (connecting, headers, between body chunks). */
  idleTimeoutMs?: number;
}

const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/** Registries must accept manifests up to 4 MiB (distribution spec); anything larger is not one. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Token responses are a few KiB; this only bounds a misbehaving token service. */
const MAX_TOKEN_BYTES = 1024 * 1024;

type Json = Record<string, unknown>;

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function isLocal(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "");
  return (
    host === "localhost" || host === "127.0.0.1" || host === "[::1]" || host.startsWith("127.")
  );
}

/** A JSON object from a body, or a clear error naming what it was meant to be. */
function parseJson(body: Buffer, what: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    value = undefined;
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} is not a JSON object`,
      "the registry served something else; check the reference, or try again",
    );
  }
  return value as Json;
}

function statusHint(status: number): string | undefined {
  if (status >= 500) return "the registry is failing; try again later";
  if (status === 429)
    return "the registry is rate-limiting you; wait a while, or log in for a higher limit";
  return undefined;
}

/** `source` with its errors replaced by `wrap(err)`; a consumer that stops early still cancels it. */
async function* mapErrors<T>(
  source: AsyncIterable<T>,
  wrap: (err: unknown) => Error,
): AsyncGenerator<T> {
  try {
    yield* source;
  } catch (err) {
    throw wrap(err);
  }
}

/** A descriptor's size is what every byte count is checked against, so it must be a real count. */
function validDescriptor(d: unknown): d is Descriptor {
  const { digest, size } = (d ?? {}) as { digest?: unknown; size?: unknown };
  return typeof digest === "string" && Number.isSafeInteger(size) && (size as number) >= 0;
}

/** Rank of an index entry's variant: none and v1 are the baseline, then the lowest level (amd64 v2..v4). */
function variantRank(variant: string | undefined): number {
  if (!variant) return 1;
  const level = /^v(\d+)$/.exec(variant);
  return level ? Number(level[1]) : Number.MAX_SAFE_INTEGER;
}

const describePlatform = (p: Descriptor["platform"]) =>
  [p?.os ?? "?", p?.architecture ?? "?", ...(p?.variant ? [p.variant] : [])].join("/");

/**
 * The index entry for `platform`. Among several (amd64 may list v1..v4 levels),
 * the one without a variant or with v1 wins, else the lowest level offered.
 */
export function choosePlatform(
  entries: Descriptor[],
  platform: { os: string; architecture: string },
): Descriptor | null {
  const matching = entries.filter(
    (m) => m.platform?.os === platform.os && m.platform?.architecture === platform.architecture,
  );
  // sort is stable: equal ranks keep the index's order, which is the publisher's preference.
  matching.sort((a, b) => variantRank(a.platform?.variant) - variantRank(b.platform?.variant));
  return matching[0] ?? null;
}

/** The platforms an index offers, for error messages; attestation entries (unknown/unknown) are not images. */
export function listPlatforms(entries: Descriptor[]): string[] {
  const names = entries
    .filter((m) => !(m.platform?.os === "unknown" && m.platform?.architecture === "unknown"))
    .map((m) => describePlatform(m.platform));
  return [...new Set(names)];
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

  private plainHttp(ref: ImageReference): boolean {
    return isLocal(ref.registry) || (this.deps.insecureRegistries ?? []).includes(ref.registry);
  }

  private base(ref: ImageReference): string {
    return `${this.plainHttp(ref) ? "http" : "https"}://${ref.registry}`;
  }

  /** A network failure talking to `host` (default: the registry) as an error that says what to do. */
  private failure(err: unknown, ref: ImageReference, host = ref.registry, during?: string) {
    return explainNetworkFailure(err, {
      host,
      registry: ref.registry,
      plainHttp: this.plainHttp(ref),
      local: isLocal(ref.registry),
      ...(during ? { during } : {}),
    });
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

  /**
   * fetch under an idle deadline: the request is aborted when the server sends
   * nothing for `idleTimeoutMs` while connecting, before the headers, or
   * between body chunks. A slow but steady download never times out.
   */
  private async send(url: string, init: RequestInit, ref: ImageReference): Promise<Response> {
    const ms = this.deps.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new RegistryTimeout(ms)), ms);
    // A body abandoned by cancel() leaves the timer: it must not hold the process, and firing is harmless.
    timer.unref();
    let response: Response;
    try {
      response = await this.fetchFn(url, { ...init, signal: controller.signal });
    } catch (err) {
      clearTimeout(timer);
      throw this.failure(err, ref, new URL(url).host);
    }
    if (!response.body) {
      clearTimeout(timer);
      return response;
    }
    const watched = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, out) {
          timer.refresh();
          out.enqueue(chunk);
        },
        flush() {
          clearTimeout(timer);
        },
      }),
    );
    return new Response(watched, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  }

  /** A whole small body; reading stops as soon as it runs past `limit` bytes. */
  private async readBody(
    response: Response,
    ref: ImageReference,
    limit: number,
    tooLarge: string,
  ): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    if (!response.body) return Buffer.alloc(0);
    try {
      for await (const chunk of Readable.fromWeb(
        response.body as WebReadableStream<Uint8Array>,
      ) as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > limit) throw new BangerError(ErrorCode.InvalidParams, tooLarge);
        chunks.push(chunk);
      }
    } catch (err) {
      throw this.failure(err, ref, ref.registry, "while reading its answer");
    }
    return Buffer.concat(chunks);
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
    const body = parseJson(
      await this.readBody(
        response,
        ref,
        MAX_TOKEN_BYTES,
        `registry ${ref.registry}: the token service's answer is larger than ${MAX_TOKEN_BYTES} bytes`,
      ),
      `registry ${ref.registry}: the token service's answer`,
    ) as { token?: unknown; access_token?: unknown };
    const token = body.token ?? body.access_token;
    if (typeof token !== "string" || !token)
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry}: the token service returned no token`,
      );
    return `Bearer ${token}`;
  }

  private async fetchManifest(
    ref: ImageReference,
    reference: string,
    expected: { digest: string; size?: number } | null,
  ): Promise<{ digest: string; mediaType: string; json: Json }> {
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
        statusHint(response.status),
      );
    }
    const what = expected
      ? `manifest ${expected.digest} of ${formatReference(ref)}`
      : `the manifest of ${formatReference(ref)}`;
    // A declared size comes from an untrusted index: it narrows the cap, never widens it.
    if (expected?.size !== undefined && expected.size > MAX_MANIFEST_BYTES)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} declares ${expected.size} bytes, more than the ${MAX_MANIFEST_BYTES} a manifest may have`,
      );
    const limit = expected?.size ?? MAX_MANIFEST_BYTES;
    const body = await this.readBody(
      response,
      ref,
      limit,
      expected?.size !== undefined
        ? `${what} is larger than the ${limit} bytes its descriptor declares`
        : `${what} is larger than ${limit} bytes, too large to be a manifest`,
    );
    if (expected?.size !== undefined && body.length !== expected.size) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} has ${body.length} bytes, but its descriptor declares ${expected.size}`,
      );
    }
    const digest = sha256(body);
    const claimed = expected?.digest ?? response.headers.get("docker-content-digest");
    if (claimed && claimed !== digest) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `manifest digest mismatch for ${formatReference(ref)}: expected ${claimed}, got ${digest}`,
      );
    }
    const json = parseJson(body, what);
    const mediaType =
      (json.mediaType as string | undefined) ??
      response.headers.get("content-type")?.split(";")[0] ??
      "";
    return { digest, mediaType, json };
  }

  /** The linux/amd64 (or `platform`) image manifest for a reference, every byte verified. */
  async resolveManifest(
    ref: ImageReference,
    platform = { os: "linux", architecture: "amd64" },
  ): Promise<ResolvedManifest> {
    const top = ref.digest ? { digest: ref.digest } : null;
    let fetched = await this.fetchManifest(ref, ref.digest ?? ref.tag ?? "latest", top);
    if ((fetched.json.schemaVersion as number | undefined) === 1) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${formatReference(ref)} uses the obsolete schema 1 manifest format`,
        "push it again with a current tool",
      );
    }
    if (Array.isArray(fetched.json.manifests)) {
      const entries = fetched.json.manifests as Descriptor[];
      const match = choosePlatform(entries, platform);
      if (!match) {
        const have = listPlatforms(entries).join(", ");
        throw new BangerError(
          ErrorCode.NotFound,
          `${formatReference(ref)} has no ${platform.os}/${platform.architecture} image (it has: ${have || "none"})`,
          `banger's VMs are ${platform.os}/${platform.architecture}: pick a tag built for it`,
        );
      }
      const chosen = describePlatform(match.platform);
      if (!validDescriptor(match)) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          `${formatReference(ref)}: the index entry for ${chosen} lacks a digest or a valid size`,
        );
      }
      fetched = await this.fetchManifest(ref, match.digest, match);
    }
    const config = fetched.json.config;
    const layers = fetched.json.layers;
    if (!validDescriptor(config) || !Array.isArray(layers)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${formatReference(ref)}: unsupported manifest (${fetched.mediaType || "unknown type"})`,
      );
    }
    if (!layers.every(validDescriptor)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${formatReference(ref)}: a layer descriptor lacks a digest or a valid size`,
      );
    }
    return { digest: fetched.digest, mediaType: fetched.mediaType, manifest: { config, layers } };
  }

  /** A blob's response, or a clear error for its HTTP status (never an error page taken for data). */
  private async fetchBlobResponse(
    ref: ImageReference,
    descriptor: Descriptor,
    kind: string,
  ): Promise<Response> {
    const response = await this.get(ref, `/v2/${ref.repository}/blobs/${descriptor.digest}`);
    if (!response.ok) {
      await response.body?.cancel();
      throw new BangerError(
        response.status === 404 ? ErrorCode.NotFound : ErrorCode.Precondition,
        `registry ${ref.registry} answered HTTP ${response.status} for ${kind} ${descriptor.digest} of ${formatReference(ref)}`,
        statusHint(response.status),
      );
    }
    return response;
  }

  /**
   * A blob through the cache: no request at all when it is already there.
   * It enters only with exactly `descriptor.size` bytes and the right digest;
   * reading stops as soon as it runs past the size.
   */
  async fetchBlob(
    ref: ImageReference,
    descriptor: Descriptor,
    cache: BlobCache,
    onBytes?: (total: number) => void,
  ): Promise<string> {
    if (cache.has(descriptor.digest)) return cache.pathOf(descriptor.digest);
    const response = await this.fetchBlobResponse(ref, descriptor, "blob");
    const body = response.body
      ? (Readable.fromWeb(response.body as WebReadableStream<Uint8Array>) as AsyncIterable<Buffer>)
      : (Readable.from([]) as AsyncIterable<Buffer>);
    // Only the download's errors are network failures; the cache's own (disk full, ...) pass as they are.
    const download = mapErrors(body, (err) =>
      this.failure(err, ref, ref.registry, `while downloading blob ${descriptor.digest}`),
    );
    return cache.put(descriptor.digest, download, onBytes, descriptor.size);
  }

  /** The image config (env, entrypoint, ...) as JSON, its size and digest verified. */
  async fetchConfig(ref: ImageReference, descriptor: Descriptor): Promise<Json> {
    const response = await this.fetchBlobResponse(ref, descriptor, "config");
    const what = `config ${descriptor.digest} of ${formatReference(ref)}`;
    // Held in memory: a declared size is not a licence to buffer gigabytes.
    if (descriptor.size > MAX_MANIFEST_BYTES)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} declares ${descriptor.size} bytes, more than the ${MAX_MANIFEST_BYTES} an image config may have`,
      );
    const body = await this.readBody(
      response,
      ref,
      descriptor.size,
      `${what} is larger than the ${descriptor.size} bytes its descriptor declares`,
    );
    if (body.length !== descriptor.size) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} has ${body.length} bytes, but its descriptor declares ${descriptor.size}`,
      );
    }
    if (sha256(body) !== descriptor.digest)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `digest mismatch for config ${descriptor.digest}: got ${sha256(body)}`,
      );
    return parseJson(body, what);
  }
}
