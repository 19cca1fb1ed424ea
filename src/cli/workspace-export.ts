import { spawn } from "node:child_process";
import { guestSshEnv } from "../guest/ssh.js";
import type { Writable } from "node:stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import { GUEST_REPLY_MAX_BYTES, GuestOutputTooLargeError } from "../guest/output.js";
import { EXPORT_HEADER_MAX_BYTES, exportError } from "../guest/workspace.js";
import { BoundedBuffer, killGroup } from "../system/runner.js";
import { visible } from "../util/terminal-text.js";

/**
 * `vm workspace export` streams the patch straight from the guest over the CLI's own OpenSSH
 * connection (as `session logs -f` does): the daemon never holds it, and the CLI holds one
 * chunk at a time, so a patch of any size costs neither of them memory.
 */

/** A changed path longer than this is not a path (PATH_MAX is 4096). */
const NAME_MAX_BYTES = 64 * 1024;

function malformed(vm: string, why: string): BangerError {
  return new BangerError(
    ErrorCode.Internal,
    `the export output of VM ${vm} is malformed (${why})`,
    `the guest's git or sh do not behave as expected; 'banger vm ssh ${vm}' to look`,
  );
}

/**
 * Splits the export script's stdout: two header lines (workspace dir, base), then the body.
 * With `nameOnly` the body's NUL-separated names come out one per line, control characters
 * escaped; otherwise the body passes through as bytes.
 */
export class ExportStreamParser {
  header: { dir: string; base: string } | null = null;
  private head: Buffer[] = [];
  private headBytes = 0;
  private name: Buffer[] = [];
  private nameBytes = 0;

  constructor(
    private readonly vm: string,
    private readonly nameOnly: boolean,
  ) {}

  /** What to write for this chunk of stdout; throws when the stream cannot be what the script prints. */
  feed(chunk: Buffer): Array<Buffer | string> {
    if (this.header) return this.body(chunk);
    this.head.push(chunk);
    this.headBytes += chunk.length;
    const all = Buffer.concat(this.head, this.headBytes);
    const first = all.indexOf(0x0a);
    const second = first < 0 ? -1 : all.indexOf(0x0a, first + 1);
    if (second < 0) {
      if (this.headBytes > EXPORT_HEADER_MAX_BYTES)
        throw malformed(this.vm, `no header within ${EXPORT_HEADER_MAX_BYTES} bytes`);
      return [];
    }
    this.header = {
      dir: all.subarray(0, first).toString("utf8"),
      base: all.subarray(first + 1, second).toString("utf8"),
    };
    this.head = [];
    return this.body(all.subarray(second + 1));
  }

  /** Call at the end of a successful run: what is left to write. */
  end(): Array<Buffer | string> {
    if (!this.header) throw malformed(this.vm, "it ended before its two header lines");
    if (!this.nameOnly || this.nameBytes === 0) return [];
    const last = Buffer.concat(this.name, this.nameBytes).toString("utf8");
    this.name = [];
    this.nameBytes = 0;
    return [`${visible(last)}\n`];
  }

  private body(chunk: Buffer): Array<Buffer | string> {
    if (chunk.length === 0) return [];
    if (!this.nameOnly) return [chunk];
    const out: string[] = [];
    let start = 0;
    for (let nul = chunk.indexOf(0, start); nul >= 0; nul = chunk.indexOf(0, start)) {
      this.name.push(chunk.subarray(start, nul));
      const name = Buffer.concat(this.name, this.nameBytes + nul - start).toString("utf8");
      this.name = [];
      this.nameBytes = 0;
      if (name) out.push(`${visible(name)}\n`);
      start = nul + 1;
    }
    if (start < chunk.length) {
      this.name.push(chunk.subarray(start));
      this.nameBytes += chunk.length - start;
      if (this.nameBytes > NAME_MAX_BYTES)
        throw malformed(this.vm, `a changed path longer than ${NAME_MAX_BYTES} bytes`);
    }
    return out;
  }
}

export interface StreamExportOptions {
  vm: string;
  /** ssh's arguments up to and including the destination. */
  sshArgs: string[];
  /** The remote command (the export script). */
  command: string;
  nameOnly: boolean;
  out: Writable;
  /** Aborting kills ssh; the promise then rejects with a Cancelled error. */
  signal?: AbortSignal;
}

/** Runs the export script over ssh, writing the patch (or the names) to `out` as it arrives. */
export function streamExport(
  opts: StreamExportOptions,
): Promise<{ dir: string; base: string; bytes: number }> {
  return new Promise((resolve, reject) => {
    // Its own process group, killed whole: nothing it started may keep the pipes open.
    const child = spawn("ssh", [...opts.sshArgs, opts.command], {
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
      // SendEnv lines in the user's ssh config cannot be cleared from the command line.
      env: guestSshEnv(process.env),
    });
    const parser = new ExportStreamParser(opts.vm, opts.nameOnly);
    let failure: unknown = null;
    let bytes = 0;
    const fail = (err: unknown) => {
      failure ??= err;
      killGroup(child);
    };
    const stderr = new BoundedBuffer(GUEST_REPLY_MAX_BYTES, () =>
      fail(
        new GuestOutputTooLargeError(
          opts.vm,
          "the workspace export",
          GUEST_REPLY_MAX_BYTES,
          "stderr",
        ),
      ),
    );
    const write = (pieces: Array<Buffer | string>) => {
      for (const p of pieces) {
        bytes += p.length;
        // Backpressure: ssh waits while a slow file or pipe catches up.
        if (!opts.out.write(p)) {
          child.stdout.pause();
          opts.out.once("drain", () => child.stdout.resume());
        }
      }
    };
    child.stdout.on("data", (c: Buffer) => {
      if (failure) return;
      try {
        write(parser.feed(c));
      } catch (err) {
        fail(err);
      }
    });
    child.stderr.on("data", (c: Buffer) => stderr.push(c));
    opts.out.on("error", fail);
    const onAbort = () => fail(new BangerError(ErrorCode.Cancelled, "cancelled"));
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    child.on("error", (err: NodeJS.ErrnoException) => {
      failure ??=
        err.code === "ENOENT"
          ? new BangerError(
              ErrorCode.Precondition,
              "ssh is not installed",
              "install the OpenSSH client (apt-get install openssh-client)",
            )
          : err;
      // A child that never started emits no 'close'.
      if (child.pid === undefined) reject(failure);
    });
    child.on("close", (code, signal) => {
      opts.signal?.removeEventListener("abort", onAbort);
      opts.out.removeListener("error", fail);
      if (failure) return reject(failure);
      try {
        if (code !== 0)
          throw exportError(opts.vm, { code, signal, stderr: stderr.buffer().toString("utf8") });
        write(parser.end());
        resolve({ ...parser.header!, bytes });
      } catch (err) {
        reject(err);
      }
    });
  });
}
