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

/** A tar archive ends with two zero blocks; GNU tar at `--blocking-factor=1` adds no padding. */
const END_OF_ARCHIVE_BYTES = 1024;

/**
 * Passes a GNU tar's output on without its end-of-archive blocks, so parts join into one
 * archive: busybox tar, the guest's tar where the image has none, reads its input to the end
 * once it has seen the end of an archive, so the guest runs exactly one `tar -x`.
 */
function withoutEndOfArchive(): Transform {
  let held = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      held = Buffer.concat([held, chunk]);
      const pass = held.length - END_OF_ARCHIVE_BYTES;
      if (pass > 0) {
        this.push(held.subarray(0, pass));
        held = held.subarray(pass);
      }
      done();
    },
    flush(done) {
      done(
        held.length === END_OF_ARCHIVE_BYTES && held.every((b) => b === 0)
          ? null
          : new BangerError(ErrorCode.Internal, "tar's output did not end with an end-of-archive"),
      );
    },
  });
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
          "--blocking-factor=1",
          "-C",
          part.root,
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
        { stdio: ["pipe", "pipe", "pipe"] },
      );
      current = child;
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
      const body = child.stdout.pipe(withoutEndOfArchive());
      body.pipe(stream, { end: false });
      let bodyError: unknown = null;
      body.on("error", (err) => (bodyError = err));
      // Every byte of the part is in the stream before the next part (or the end) follows.
      const flushed = new Promise<void>((r) => body.once("end", r).once("error", () => r()));
      child.stdin.on("error", () => {});
      child.stdin.end(part.names.map((n) => `${n}\0`).join(""));
      child.on("error", reject);
      child.on("close", (code, signal) => {
        current = null;
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
