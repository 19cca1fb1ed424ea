import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";
import { BangerError, ErrorCode } from "../../api/errors.js";
import { ensureFreeSpace, formatBytes, limitError, type ImageLimits } from "../limits.js";

/**
 * The members of a local image archive (docker-archive, oci-archive) or OCI layout directory,
 * each copied into banger's staging dir as it is read, with its size and sha256. The archive is
 * untrusted: its names are only ever keys (a copy is `member-<n>`), never host paths.
 */

/** One member, copied: `file` is banger's own copy under the staging dir. */
export interface Member {
  file: string;
  size: number;
  /** sha256 of the bytes as stored, `sha256:<hex>`. */
  digest: string;
}

/** Looks members up by their normalised name (e.g. `index.json`, `blobs/sha256/<hex>`). */
export interface MemberSource {
  get(name: string): Promise<Member | null>;
  /** How to name the source in errors. */
  what: string;
}

/** An archive holds a manifest, a config and layers per image: more than this is not one. */
export const MAX_ARCHIVE_MEMBERS = 10_000;

const refuse = (what: string, why: string): BangerError =>
  new BangerError(
    ErrorCode.InvalidParams,
    `${what}: ${why}; nothing was imported`,
    "give an archive written by 'docker save', 'podman save' or 'skopeo copy' (docker-archive, oci-archive or oci:<dir>)",
  );

/**
 * A member name as a key: `./` prefixes dropped; an absolute name, a `..` component, an empty
 * component or a control character refuses the archive (a real one never has them).
 */
export function memberName(raw: string, what: string): string {
  let name = raw;
  while (name.startsWith("./")) name = name.slice(2);
  if (name.endsWith("/")) name = name.slice(0, -1);
  if (/[\x00-\x1f\x7f\\]/.test(name))
    throw refuse(what, `member ${JSON.stringify(raw)} has a control character or backslash`);
  if (name.startsWith("/")) throw refuse(what, `member ${JSON.stringify(raw)} is an absolute path`);
  if (name === "" || name.split("/").some((p) => p === "" || p === "." || p === ".."))
    throw refuse(what, `member ${JSON.stringify(raw)} is not a plain relative path`);
  return name;
}

/** Copies `source` to `dest` (new), counting and hashing; more than `max` bytes fails. */
export async function copyCounted(
  source: Readable,
  dest: string,
  max: number,
  tooLarge: () => Error,
  signal?: AbortSignal,
): Promise<{ size: number; digest: string }> {
  const hash = createHash("sha256");
  let size = 0;
  await pipeline(
    source,
    new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > max) return done(tooLarge());
        hash.update(chunk);
        done(null, chunk);
      },
    }),
    fs.createWriteStream(dest, { flags: "wx", mode: 0o600 }),
    signal ? { signal } : {},
  );
  return { size, digest: `sha256:${hash.digest("hex")}` };
}

/** Keeps the last 1024 bytes that passed: a whole tar ends with two zero blocks. */
function tailKeeper(): { stream: Transform; endsWithMarker: () => boolean } {
  let tail = Buffer.alloc(0);
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      // A copy, so the kept tail never pins a whole chunk in memory.
      tail =
        chunk.length >= 1024
          ? Buffer.from(chunk.subarray(chunk.length - 1024))
          : Buffer.concat([tail, chunk]).subarray(-1024);
      done(null, chunk);
    },
  });
  return { stream, endsWithMarker: () => tail.length === 1024 && tail.every((b) => b === 0) };
}

/**
 * Reads a tar archive (`input`: the file, then its decompressor if any) to its end, copying every
 * regular member into `dir`. Devices and FIFOs, duplicate names and unsafe names refuse it; every member's declared size is bounded before its data is read; a stream that stops
 * before the tar's end-of-archive marker (a truncated file or a half-sent stdin) refuses it.
 */
export async function spoolArchive(
  input: Readable[],
  dir: string,
  limits: ImageLimits,
  what: string,
  onBytes: (n: number) => void = () => {},
  signal?: AbortSignal,
): Promise<MemberSource> {
  await fsp.mkdir(dir, { recursive: true });
  const members = new Map<string, Member>();
  const seen = new Set<string>();
  const links = new Set<string>();
  const extract = tar.extract();
  const tail = tailKeeper();
  let total = 0;
  type Destroyable = { destroy(err?: Error): void };
  let current: Destroyable | null = null;
  const stop = new AbortController();
  const consume = async (): Promise<void> => {
    for await (const entry of extract) {
      current = entry;
      const header = entry.header;
      // `tar -C dir .` writes the top directory itself as "./": nothing to keep.
      if (header.type === "directory" && /^\.(\/\.)*\/?$/.test(header.name)) {
        entry.resume();
        continue;
      }
      const name = memberName(header.name, what);
      if (seen.has(name)) throw refuse(what, `member ${JSON.stringify(name)} appears twice`);
      seen.add(name);
      if (seen.size > MAX_ARCHIVE_MEMBERS)
        throw refuse(what, `it has more than ${MAX_ARCHIVE_MEMBERS} members`);
      if (header.type === "directory") {
        entry.resume();
        continue;
      }
      // skopeo and docker add links beside the real files (<id>/layer.tar -> ../<hex>.tar): they
      // are never followed, and one the manifest names refuses the archive.
      if (header.type === "symlink" || header.type === "link") {
        links.add(name);
        entry.resume();
        continue;
      }
      if (header.type !== "file" && header.type !== "contiguous-file")
        throw refuse(what, `member ${JSON.stringify(name)} is a ${header.type}, not a file`);
      const declared = header.size ?? 0;
      if (declared > limits.maxLayerBytes || total + declared > limits.maxImageBytes)
        throw limitError(
          `${what}: member ${JSON.stringify(name)} declares ${formatBytes(declared)}, more than an image may have`,
          declared > limits.maxLayerBytes ? "max_layer_size" : "max_image_size",
        );
      await ensureFreeSpace(dir, declared, `reading ${what}`);
      const file = path.join(dir, `member-${seen.size}`);
      // Once the archive's stream has failed, a member's data never comes: the abort ends the wait.
      const copied = await copyCounted(
        entry as unknown as Readable,
        file,
        declared,
        () => refuse(what, `member ${JSON.stringify(name)} is longer than its header says`),
        stop.signal,
      );
      total += copied.size;
      onBytes(total);
      members.set(name, { file, ...copied });
    }
  };
  // Either side may fail first; the archive's own refusal (a BangerError) is the one to report.
  const consumed = consume().then(
    () => null,
    (err: unknown) => err,
  );
  const streamed = await pipeline([...input, tail.stream, extract], signal ? { signal } : {}).then(
    () => null,
    (err: unknown) => err,
  );
  if (streamed) {
    stop.abort(streamed);
    (current as Destroyable | null)?.destroy(streamed as Error);
    extract.destroy();
  }
  const failed = await consumed;
  const err = failed instanceof BangerError ? failed : (streamed ?? failed);
  if (err instanceof BangerError) throw err;
  if (signal?.aborted)
    throw new BangerError(
      ErrorCode.Cancelled,
      `reading ${what} was cancelled; nothing was imported`,
    );
  if (err) throw refuse(what, `it is not a readable tar archive (${(err as Error).message})`);
  if (!tail.endsWithMarker())
    throw refuse(what, "it ends before the tar's end-of-archive marker (truncated?)");
  return {
    what,
    get: async (raw) => {
      const name = memberName(raw, what);
      if (links.has(name))
        throw refuse(what, `member ${JSON.stringify(name)} is a link, and banger follows none`);
      return members.get(name) ?? null;
    },
  };
}
