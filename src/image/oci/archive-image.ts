import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import { pipeline } from "node:stream/promises";
import { Writable } from "node:stream";
import { BangerError, ErrorCode, type ErrorCodeValue } from "../../api/errors.js";
import { formatBytes, limitError, type ImageLimits } from "../limits.js";
import type { Member, MemberSource } from "./archive-members.js";
import { decompressor, sniffCompression, type Compression } from "./compression.js";
import { checkDeclaredSizes } from "./puller.js";
import {
  choosePlatform,
  listPlatforms,
  MAX_MANIFEST_BYTES,
  MEDIA,
  validDescriptor,
  type Descriptor,
} from "./registry-manifests.js";
import type { Json } from "./registry-transport.js";

/**
 * The image inside a local archive or layout: OCI (index.json → linux/amd64 manifest → config
 * and layers, every blob checked against its descriptor's size and digest) or docker-archive
 * (manifest.json → a config named by its digest → layers checked against its diff_ids).
 */
export interface ArchiveImage {
  format: "oci" | "docker-archive";
  /** The manifest's digest (OCI) or the config's, which is docker's image ID. */
  digest: string;
  config: Json;
  /** Verified layer copies, oldest first. */
  layers: string[];
}

const PLATFORM = { os: "linux", architecture: "amd64" };

/** Layer media types banger unpacks, and the compression each one says its bytes have. */
const LAYER_MEDIA: Record<string, Compression> = {
  "application/vnd.oci.image.layer.v1.tar": "none",
  "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd": "zstd",
  "application/vnd.oci.image.layer.nondistributable.v1.tar": "none",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd": "zstd",
  "application/vnd.docker.image.rootfs.diff.tar": "none",
  "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
};

const refuse = (
  what: string,
  why: string,
  code: ErrorCodeValue = ErrorCode.InvalidParams,
): BangerError => new BangerError(code, `${what}: ${why}; nothing was imported`);

/** The archive's image: OCI when it has an `oci-layout`, else docker's `manifest.json`. */
export async function readArchiveImage(
  src: MemberSource,
  limits: ImageLimits,
): Promise<ArchiveImage> {
  if (await src.get("oci-layout")) return readOciImage(src, limits);
  if (await src.get("manifest.json")) return readDockerArchive(src, limits);
  throw refuse(
    src.what,
    "it is neither an OCI layout (no oci-layout, index.json) nor a docker-archive (no manifest.json)",
  );
}

async function readJson(src: MemberSource, member: Member, what: string): Promise<unknown> {
  if (member.size > MAX_MANIFEST_BYTES)
    throw refuse(src.what, `${what} is ${formatBytes(member.size)}, too large to be one`);
  try {
    return JSON.parse(await fsp.readFile(member.file, "utf8"));
  } catch {
    throw refuse(src.what, `${what} is not JSON`);
  }
}

const isObject = (v: unknown): v is Json => !!v && typeof v === "object" && !Array.isArray(v);

async function readObject(src: MemberSource, member: Member, what: string): Promise<Json> {
  const value = await readJson(src, member, what);
  if (!isObject(value)) throw refuse(src.what, `${what} is not a JSON object`);
  return value;
}

/** A blob the descriptor names, its size and digest matched; its declared size bounded first. */
async function blob(src: MemberSource, d: Descriptor, kind: string, max: number): Promise<Member> {
  const hex = /^sha256:([0-9a-f]{64})$/.exec(d.digest)?.[1];
  if (!hex) throw refuse(src.what, `${kind} digest ${JSON.stringify(d.digest)} is not sha256`);
  if (d.size > max)
    throw refuse(
      src.what,
      `${kind} ${d.digest} declares ${formatBytes(d.size)}, more than allowed`,
    );
  const member = await src.get(`blobs/sha256/${hex}`);
  if (!member) throw refuse(src.what, `the ${kind} ${d.digest} it names is not in it`);
  if (member.size !== d.size)
    throw refuse(
      src.what,
      `${kind} ${d.digest} has ${member.size} bytes, its descriptor ${d.size}`,
    );
  if (member.digest !== d.digest)
    throw refuse(src.what, `digest mismatch for ${kind} ${d.digest}: got ${member.digest}`);
  return member;
}

function descriptors(src: MemberSource, json: Json, what: string): Descriptor[] {
  const list = json.manifests;
  if (!Array.isArray(list) || !list.every(validDescriptor))
    throw refuse(src.what, `${what} has no valid "manifests" list`);
  return list;
}

const isIndex = (d: Descriptor) =>
  d.mediaType === MEDIA.ociIndex || d.mediaType === MEDIA.dockerList;

/** The linux/amd64 entry of an index; one without platforms must hold exactly one image. */
function pick(src: MemberSource, entries: Descriptor[], what: string): Descriptor {
  if (entries.some((e) => e.platform)) {
    const match = choosePlatform(entries, PLATFORM);
    if (match) return match;
    throw refuse(
      src.what,
      `it has no linux/amd64 image (it has: ${listPlatforms(entries).join(", ") || "none"})`,
      ErrorCode.NotFound,
    );
  }
  if (entries.length === 1) return entries[0]!;
  const names = entries.map(
    (e) =>
      (e as { annotations?: Record<string, unknown> }).annotations?.[
        "org.opencontainers.image.ref.name"
      ],
  );
  throw refuse(
    src.what,
    `${what} lists ${entries.length} images without platforms (${names.map((n) => (typeof n === "string" ? JSON.stringify(n) : "unnamed")).join(", ")}), banger cannot tell which to take; copy the one you want to a layout of its own`,
  );
}

async function readOciImage(src: MemberSource, limits: ImageLimits): Promise<ArchiveImage> {
  const indexMember = await src.get("index.json");
  if (!indexMember) throw refuse(src.what, "it has an oci-layout but no index.json");
  let entries = descriptors(src, await readObject(src, indexMember, "index.json"), "index.json");
  let chosen = pick(src, entries, "index.json");
  // index.json may point at an image index (a multi-platform image): one level down, no more.
  if (isIndex(chosen)) {
    const nested = await blob(src, chosen, "index", MAX_MANIFEST_BYTES);
    entries = descriptors(src, await readObject(src, nested, "its index"), "its index");
    chosen = pick(src, entries, `index ${chosen.digest}`);
    if (isIndex(chosen)) throw refuse(src.what, "its indexes nest more than two deep");
  }
  const manifestMember = await blob(src, chosen, "manifest", MAX_MANIFEST_BYTES);
  const manifest = await readObject(src, manifestMember, `manifest ${chosen.digest}`);
  const { config: configDesc, layers } = manifest;
  if (!validDescriptor(configDesc) || !Array.isArray(layers) || !layers.every(validDescriptor))
    throw refuse(src.what, `manifest ${chosen.digest} has no valid config and layers`);
  checkDeclaredSizes(layers, limits);
  const config = await readObject(
    src,
    await blob(src, configDesc, "config", MAX_MANIFEST_BYTES),
    `config ${configDesc.digest}`,
  );
  checkPlatform(src, config);
  const files: string[] = [];
  for (const layer of layers) {
    const compression = LAYER_MEDIA[layer.mediaType];
    if (!compression)
      throw refuse(
        src.what,
        `layer ${layer.digest} has media type ${JSON.stringify(layer.mediaType)}, which banger does not unpack`,
      );
    const member = await blob(src, layer, "layer", limits.maxLayerBytes);
    const found = await sniffCompression(member.file);
    if (found !== compression)
      throw refuse(
        src.what,
        `layer ${layer.digest} is ${found}, but its media type says ${compression}`,
      );
    files.push(member.file);
  }
  return { format: "oci", digest: chosen.digest, config, layers: files };
}

/** An image config that names another platform is not one banger boots. */
function checkPlatform(src: MemberSource, config: Json): void {
  const { os, architecture } = config;
  if (
    (os !== undefined && os !== PLATFORM.os) ||
    (architecture !== undefined && architecture !== PLATFORM.architecture)
  )
    throw refuse(
      src.what,
      `its image is ${String(os)}/${String(architecture)}, not linux/amd64`,
      ErrorCode.NotFound,
    );
}

/** sha256 of a layer's tar stream (its diff_id), decompressed as its magic says, bounded. */
async function diffId(member: Member, limits: ImageLimits, what: string): Promise<string> {
  const compression = await sniffCompression(member.file);
  if (compression === "none") return member.digest;
  const hash = createHash("sha256");
  let bytes = 0;
  await pipeline(
    fs.createReadStream(member.file),
    decompressor(compression)!,
    new Writable({
      write(chunk: Buffer, _enc, done) {
        bytes += chunk.length;
        if (bytes > limits.maxImageBytes)
          return done(
            limitError(
              `${what} unpacks to more than ${formatBytes(limits.maxImageBytes)}`,
              "max_image_size",
            ),
          );
        hash.update(chunk);
        done();
      },
    }),
  ).catch((err: unknown) => {
    if (err instanceof BangerError) throw err;
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} does not decompress: ${(err as Error).message}; nothing was imported`,
    );
  });
  return `sha256:${hash.digest("hex")}`;
}

/** docker-archive: manifest.json names the config (by its digest) and the layers, in order. */
async function readDockerArchive(src: MemberSource, limits: ImageLimits): Promise<ArchiveImage> {
  const list = await readJson(src, (await src.get("manifest.json"))!, "manifest.json");
  if (!Array.isArray(list) || list.length === 0 || !list.every(isObject))
    throw refuse(src.what, "manifest.json is not a list of images");
  if (list.length > 1)
    throw refuse(
      src.what,
      `it holds ${list.length} images, banger imports one (save them one per archive)`,
    );
  const entry = list[0] as Json;
  const { Config: configName, Layers: layerNames } = entry;
  if (
    typeof configName !== "string" ||
    !Array.isArray(layerNames) ||
    !layerNames.every((l) => typeof l === "string")
  )
    throw refuse(src.what, "manifest.json's image has no Config and Layers");
  // The config's name is its digest (docker's image ID): that is what vouches for the layers.
  const hex = /^(?:blobs\/sha256\/)?([0-9a-f]{64})(?:\.json)?$/.exec(configName)?.[1];
  if (!hex)
    throw refuse(src.what, `its config ${JSON.stringify(configName)} is not named by its digest`);
  const configMember = await src.get(configName);
  if (!configMember)
    throw refuse(src.what, `the config ${configName} manifest.json names is not in it`);
  if (configMember.digest !== `sha256:${hex}`)
    throw refuse(src.what, `digest mismatch for config ${configName}: got ${configMember.digest}`);
  const config = await readObject(src, configMember, `config ${configName}`);
  checkPlatform(src, config);
  const diffIds = (config.rootfs as Json | undefined)?.diff_ids;
  if (!Array.isArray(diffIds) || diffIds.length !== layerNames.length)
    throw refuse(
      src.what,
      `config ${configName} lists ${Array.isArray(diffIds) ? diffIds.length : "no"} layer digests for ${layerNames.length} layers`,
    );
  const files: string[] = [];
  for (const [i, name] of (layerNames as string[]).entries()) {
    const member = await src.get(name);
    if (!member) throw refuse(src.what, `the layer ${name} manifest.json names is not in it`);
    if (member.size > limits.maxLayerBytes)
      throw limitError(
        `${src.what}: layer ${name} is ${formatBytes(member.size)}, more than a layer may have`,
        "max_layer_size",
      );
    const got = await diffId(member, limits, `${src.what}: layer ${name}`);
    if (got !== diffIds[i])
      throw refuse(
        src.what,
        `digest mismatch for layer ${name}: the config says ${String(diffIds[i])}, got ${got}`,
      );
    files.push(member.file);
  }
  return { format: "docker-archive", digest: `sha256:${hex}`, config, layers: files };
}
