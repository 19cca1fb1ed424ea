import { BangerError, ErrorCode } from "../../api/errors.js";

export interface ImageReference {
  /** Registry host[:port], e.g. registry-1.docker.io or 127.0.0.1:5000. */
  registry: string;
  /** Repository path, e.g. library/debian. */
  repository: string;
  tag: string | null;
  digest: string | null;
}

const DOCKER_HUB = "registry-1.docker.io";
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DIGEST = /^sha256:[0-9a-f]{64}$/;
/** host, host:port, [v6]:port; each DNS label 1-63 of letters, digits and inner '-'. */
const REGISTRY =
  /^(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?))*|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?$/;

/** A registry part a URL can be made of: a hostname or address and a port from 1 to 65535. */
function checkRegistry(input: string, registry: string): void {
  const m = REGISTRY.exec(registry);
  if (!m || registry.length > 255) throw bad(input, `"${registry}" is not a registry host[:port]`);
  if (m[1] !== undefined) {
    const port = Number(m[1]);
    if (port < 1 || port > 65535)
      throw bad(input, `port ${m[1]} of registry "${registry}" is not from 1 to 65535`);
  }
}

function bad(input: string, why: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `invalid image reference "${input}": ${why}`,
    "e.g. debian:bookworm, ghcr.io/org/image:tag or host:5000/name@sha256:<digest>",
  );
}

/**
 * Parses references the way Docker does: the first component is a registry
 * when it has a '.' or ':' or is 'localhost'; otherwise Docker Hub, where
 * single names live under library/. No tag and no digest means :latest.
 */
export function parseReference(input: string): ImageReference {
  const text = input.trim();
  if (text === "") throw bad(input, "it is empty");
  let rest = text;
  let digest: string | null = null;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest))
      throw bad(input, "a digest must be sha256: followed by 64 lower-case hex digits");
  }
  let tag: string | null = null;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.lastIndexOf(":");
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(input, `"${tag}" is not a valid tag`);
  }
  const parts = rest.split("/");
  let registry = DOCKER_HUB;
  const first = parts[0]!;
  if (parts.length > 1 && (first.includes(".") || first.includes(":") || first === "localhost")) {
    registry = first === "docker.io" || first === "index.docker.io" ? DOCKER_HUB : first;
    checkRegistry(input, registry);
    parts.shift();
  }
  if (parts.length === 0 || parts.some((p) => p === "")) throw bad(input, "empty path component");
  for (const p of parts) {
    if (!COMPONENT.test(p))
      throw bad(input, `"${p}" must be lower-case letters, digits and separators`);
  }
  // The distribution spec's bound on a repository name (registry part included).
  if (rest.length > 255)
    throw bad(input.slice(0, 64) + "...", "the name is longer than 255 characters");
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift("library");
  if (!tag && !digest) tag = "latest";
  return { registry, repository: parts.join("/"), tag, digest };
}

export function formatReference(ref: ImageReference): string {
  let out = `${ref.registry}/${ref.repository}`;
  if (ref.tag) out += `:${ref.tag}`;
  if (ref.digest) out += `@${ref.digest}`;
  return out;
}

/** A local image name from a reference: debian:bookworm → debian-bookworm, by digest → name-<12 hex>. */
export function defaultImageName(ref: ImageReference): string {
  const base = ref.repository.split("/").at(-1)!;
  const suffix = ref.digest ? ref.digest.slice("sha256:".length, "sha256:".length + 12) : ref.tag;
  const name = `${base}-${suffix}`
    .toLowerCase()
    .replace(/[^a-z0-9._-]/g, "-")
    .slice(0, 63);
  return /^[a-z0-9]/.test(name) ? name : `i${name}`.slice(0, 63);
}
