import { BangerError, ErrorCode } from "../../api/errors.js";
import { formatReference, type ImageReference } from "./reference.js";
import {
  parseJson,
  sha256,
  statusHint,
  type Json,
  type RegistryTransport,
} from "./registry-transport.js";

/** Manifests: media types, the index → platform choice, and every manifest byte verified. */

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

/** Registries must accept manifests up to 4 MiB (distribution spec); anything larger is not one. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/** A descriptor's size is what every byte count is checked against, so it must be a real count. */
export function validDescriptor(d: unknown): d is Descriptor {
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

async function fetchManifest(
  http: RegistryTransport,
  ref: ImageReference,
  reference: string,
  expected: { digest: string; size?: number } | null,
): Promise<{ digest: string; mediaType: string; json: Json }> {
  const response = await http.get(ref, `/v2/${ref.repository}/manifests/${reference}`, {
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
  const body = await http.readBody(
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

/** The `platform` image manifest for a reference (through its index, if any), every byte verified. */
export async function resolveManifest(
  http: RegistryTransport,
  ref: ImageReference,
  platform: { os: string; architecture: string },
): Promise<ResolvedManifest> {
  const top = ref.digest ? { digest: ref.digest } : null;
  let fetched = await fetchManifest(http, ref, ref.digest ?? ref.tag ?? "latest", top);
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
    fetched = await fetchManifest(http, ref, match.digest, match);
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
