import { spawn } from "node:child_process";
import { PassThrough, Transform, type Readable } from "node:stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { TarPart } from "./plan.js";

/** A running tar producer. `done` settles once every archive was written (or one failed). */
export interface TarSource {
  stream: Readable;
  done: Promise<void>;
  kill(): void;
}

export type TarSourceFactory = (parts: TarPart[]) => TarSource;

/** A tar archive ends with two zero blocks (GNU tar pads its last record with more zeros). */
const END_OF_ARCHIVE_BYTES = 1024;

const isZeros = (b: Buffer) => b.every((x) => x === 0);

/** A member's data size from its header, or null when the header is not one GNU tar wrote. */
function memberSize(h: Buffer): number | null {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
  if (parseInt(h.toString("latin1", 148, 156), 8) !== sum) return null;
  // GNU's old sparse members carry extension blocks banger never asks tar for (no --sparse).
  if (h[156] === 0x53 /* S */) return null;
  if (h[124]! & 0x80) {
    // base-256, for sizes past 8 GiB
    let n = h[124]! & 0x7f;
    for (let i = 125; i < 136; i++) n = n * 256 + h[i]!;
    return n;
  }
  const text = h.toString("latin1", 124, 136).replace(/[\0 ]+$/, "");
  return /^[0-7]*$/.test(text) ? parseInt(text || "0", 8) : null;
}

/**
 * Passes a GNU tar's output on up to its end-of-archive, so parts join into one archive:
 * busybox tar, the guest's tar where the image has none, reads its input to the end once it
 * has seen the end of an archive, so the guest runs exactly one `tar -x`. It walks the member
 * headers (each followed by its data in 512-byte blocks) to the first zero block; what follows
 * must be zeros too.
 */
function withoutEndOfArchive(): Transform {
  const refuse = (why: string) =>
    new BangerError(ErrorCode.Internal, `tar's output is not what banger expects: ${why}`);
  let held: Buffer = Buffer.alloc(0);
  /** Data bytes of the current member still to pass on. */
  let data = 0;
  let ended = false;
  let trailing = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (ended) {
        trailing += chunk.length;
        return done(isZeros(chunk) ? null : refuse("data after its end-of-archive"));
      }
      held = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
      let at = 0;
      for (;;) {
        const pass = Math.min(data, held.length - at);
        at += pass;
        data -= pass;
        if (data > 0 || held.length - at < 512) break;
        const header = held.subarray(at, at + 512);
        if (isZeros(header)) {
          ended = true;
          const rest = held.subarray(at);
          trailing = rest.length;
          if (!isZeros(rest)) return done(refuse("data after its end-of-archive"));
          this.push(held.subarray(0, at));
          held = Buffer.alloc(0);
          return done();
        }
        const size = memberSize(header);
        if (size === null) return done(refuse("a member header that does not check out"));
        at += 512;
        data = Math.ceil(size / 512) * 512;
      }
      this.push(held.subarray(0, at));
      held = held.subarray(at);
      done();
    },
    flush(done) {
      done(ended && trailing >= END_OF_ARCHIVE_BYTES ? null : refuse("it ended early"));
    },
  });
}

/**
 * The daemon's environment without what GNU tar reads as options (TAR_OPTIONS, and
 * POSIXLY_CORRECT, TAPE and the rest of TAR_*): the user's settings must not change what
 * the stream carries or what withoutEndOfArchive has to parse.
 */
function tarEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(
    Object.entries(env).filter(([k]) => !/^(TAR_.*|TAPE|POSIXLY_CORRECT)$/.test(k)),
  );
}

/**
 * The real tar source: one GNU tar per part, run one after another, their archives joined
 * into one (each part's names under its dest, `.git/` for the git dir) without an end: the
 * caller ends it with commitTrailer. Names go to tar NUL-separated and verbatim, so spaces,
 * quotes, newlines and leading dashes are just names; --no-recursion because the lists are
 * complete.
 */
export const gnuTarSource: TarSourceFactory = (parts) => {
  const stream = new PassThrough();
  let current: ReturnType<typeof spawn> | null = null;
  let killed = false;
  const runPart = (part: TarPart) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(
        "tar",
        [
          "-c",
          "-f",
          "-",
          "-C",
          part.root,
          // What withoutEndOfArchive walks: GNU headers, whatever tar was built to default to.
          "--format=gnu",
          // Symlink targets keep pointing where they did (S); hard link targets move too.
          ...(part.dest === "." ? [] : [`--transform=s,^,${part.dest}/,S`]),
          "--numeric-owner",
          "--owner=0",
          "--group=0",
          "--no-recursion",
          "--null",
          "--verbatim-files-from",
          "-T",
          "-",
        ],
        { stdio: ["pipe", "pipe", "pipe"], env: tarEnv(process.env) },
      );
      current = child;
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
      const body = child.stdout.pipe(withoutEndOfArchive());
      body.pipe(stream, { end: false });
      let bodyError: unknown = null;
      body.on("error", (err) => {
        // A refused part: tar would block on its full pipe forever, so end it; `close` rejects.
        bodyError = err;
        child.stdout.unpipe();
        child.stdout.destroy();
        child.kill("SIGKILL");
      });
      // Every byte of the part is in the stream before the next part (or the end) follows.
      const flushed = new Promise<void>((r) => body.once("end", r).once("error", () => r()));
      child.stdin.on("error", () => {});
      child.stdin.end(part.names.map((n) => `${n}\0`).join(""));
      child.on("error", reject);
      child.on("close", (code, signal) => {
        current = null;
        if (bodyError) return reject(bodyError);
        if (code === 0) return void flushed.then(() => (bodyError ? reject(bodyError) : resolve()));
        const tail = stderr.trim().split("\n").slice(-5).join("\n");
        reject(
          new BangerError(
            ErrorCode.Internal,
            killed
              ? "the workspace import was stopped"
              : `tar ${signal ? `was killed by ${signal}` : `exited with status ${code}`} while reading ${part.root}${tail ? `:\n${tail}` : ""}`,
            killed ? undefined : "a file changed or vanished while it was read: run it again",
          ),
        );
      });
    });
  const done = (async () => {
    for (const part of parts) {
      if (killed) throw new BangerError(ErrorCode.Cancelled, "the workspace import was stopped");
      await runPart(part);
    }
    stream.end();
  })();
  done.catch(() => undefined);
  return {
    stream,
    done,
    kill() {
      killed = true;
      (current as ReturnType<typeof spawn> | null)?.kill("SIGKILL");
    },
  };
};

/** One ustar header block: `name` (at most 100 bytes), a regular file of `size` bytes. */
function ustarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const field = (at: number, len: number, value: string) => h.write(value, at, len, "latin1");
  const octal = (at: number, len: number, n: number) =>
    field(at, len, `${n.toString(8).padStart(len - 1, "0")}\0`);
  field(0, 100, name);
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 0);
  field(148, 8, " ".repeat(8)); // the checksum counts its own field as spaces
  field(156, 1, "0");
  field(257, 8, "ustar\x0000");
  let sum = 0;
  for (const b of h) sum += b;
  field(148, 8, `${sum.toString(8).padStart(6, "0")}\0 `);
  return h;
}

/**
 * The end of an import stream, sent only once every part was read whole: the member `name`
 * holding `marker` (the guest swaps in nothing unless it finds it), then the end of the archive.
 */
export function commitTrailer(name: string, marker: string): Buffer {
  const data = Buffer.from(`${marker}\n`);
  const padded = Buffer.alloc(Math.ceil(data.length / 512) * 512);
  data.copy(padded);
  return Buffer.concat([
    ustarHeader(name, data.length),
    padded,
    Buffer.alloc(END_OF_ARCHIVE_BYTES),
  ]);
}
