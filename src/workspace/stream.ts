import { spawn } from "node:child_process";
import { PassThrough, type Readable } from "node:stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { TarPart } from "./plan.js";

/** A running tar producer. `done` settles once every archive was written (or one failed). */
export interface TarSource {
  stream: Readable;
  done: Promise<void>;
  kill(): void;
}

export type TarSourceFactory = (parts: TarPart[]) => TarSource;

/**
 * The real tar source: one GNU tar per part, run one after another, their
 * archives concatenated (the guest extracts them one by one). Names go to tar
 * NUL-separated and verbatim, so spaces, quotes, newlines and leading dashes are
 * just names; --no-recursion because the lists are complete.
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
      child.stdout.pipe(stream, { end: false });
      child.stdin.on("error", () => {});
      child.stdin.end(part.names.map((n) => `${n}\0`).join(""));
      child.on("error", reject);
      child.on("close", (code, signal) => {
        current = null;
        if (code === 0) return resolve();
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
