import { spawn } from "node:child_process";
import type { Readable } from "node:stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import {
  BoundedBuffer,
  killGroup,
  outputCap,
  type CommandResult,
  type CommandRunner,
} from "../system/runner.js";
import { GUEST_REPLY_MAX_BYTES, GuestOutputTooLargeError, rethrowGuestOutput } from "./output.js";
import { guestSshArgs, type GuestTarget } from "./ssh.js";

/** One call into a guest: `what` names it in the error when its output passes the cap. */
export interface GuestCall {
  what: string;
  timeoutMs: number;
  /** Per stream; default GUEST_REPLY_MAX_BYTES. */
  maxOutputBytes?: number;
  input?: string | Buffer;
  signal?: AbortSignal;
}

/** A streamed call: stdin from a stream, stdout kept as bytes (patches need not be UTF-8). */
export interface GuestStreamOptions {
  /** Piped to the remote command's stdin; ends when it ends. */
  stdin?: Readable;
  signal: AbortSignal;
  timeoutMs: number;
  /** Most stdout kept (stderr keeps GUEST_REPLY_MAX_BYTES); past it ssh is killed. */
  maxStdoutBytes?: number;
  /** Names the call in the error when the guest prints past the cap. */
  what: string;
}

export interface GuestStreamResult {
  code: number | null;
  signal: string | null;
  stdout: Buffer;
  stderr: string;
}

/**
 * The one way the daemon runs something in a guest over SSH: banger's key, no ssh config,
 * BatchMode and keep-alives (a guest that goes away mid-call must not hold ssh until its
 * deadline), a deadline, and output capped per stream.
 */
export class GuestShell {
  constructor(private readonly runner: CommandRunner) {}

  /** ssh's argv for one non-interactive command in the guest. */
  argv(target: GuestTarget, command: string): string[] {
    return [...guestSshArgs(target), command];
  }

  /** A command whose input fits in memory, through the command runner. */
  run(target: GuestTarget, command: string, call: GuestCall): Promise<CommandResult> {
    return this.runner
      .run("ssh", this.argv(target, command), {
        timeoutMs: call.timeoutMs,
        maxOutputBytes: call.maxOutputBytes ?? GUEST_REPLY_MAX_BYTES,
        ...(call.input !== undefined ? { input: call.input } : {}),
        ...(call.signal ? { signal: call.signal } : {}),
      })
      .catch(rethrowGuestOutput(target.vmName, call.what));
  }

  /**
   * A command fed from a stream (a workspace's tar), as an ssh child of its own (the runner
   * takes its input whole); killed on abort, at the deadline or past its output caps.
   */
  stream(
    target: GuestTarget,
    command: string,
    opts: GuestStreamOptions,
  ): Promise<GuestStreamResult> {
    return new Promise((resolve, reject) => {
      if (opts.signal.aborted) {
        reject(new BangerError(ErrorCode.Cancelled, "cancelled"));
        return;
      }
      // Its own process group: whatever it starts (a ProxyCommand) goes with it.
      const child = spawn("ssh", this.argv(target, command), {
        stdio: ["pipe", "pipe", "pipe"],
        detached: true,
      });
      const kill = () => killGroup(child);
      let overflow: { stream: "stdout" | "stderr"; limit: number } | null = null;
      const tooMuch = (stream: "stdout" | "stderr", limit: number) => () => {
        overflow ??= { stream, limit };
        kill();
      };
      const stdoutCap = outputCap(opts.maxStdoutBytes ?? GUEST_REPLY_MAX_BYTES);
      const stdout = new BoundedBuffer(stdoutCap, tooMuch("stdout", stdoutCap));
      const stderr = new BoundedBuffer(
        GUEST_REPLY_MAX_BYTES,
        tooMuch("stderr", GUEST_REPLY_MAX_BYTES),
      );
      child.stdout.on("data", (c: Buffer) => stdout.push(c));
      child.stderr.on("data", (c: Buffer) => stderr.push(c));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        kill();
      }, opts.timeoutMs);
      const onAbort = () => kill();
      opts.signal.addEventListener("abort", onAbort, { once: true });
      // A guest that exits without reading everything must not crash the daemon with EPIPE.
      child.stdin.on("error", () => {});
      if (opts.stdin) opts.stdin.pipe(child.stdin);
      else child.stdin.end();
      child.on("error", (err) => {
        clearTimeout(timer);
        opts.signal.removeEventListener("abort", onAbort);
        reject(err);
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        opts.signal.removeEventListener("abort", onAbort);
        opts.stdin?.unpipe(child.stdin);
        if (overflow)
          reject(
            new GuestOutputTooLargeError(target.vmName, opts.what, overflow.limit, overflow.stream),
          );
        else if (timedOut)
          reject(
            new BangerError(
              ErrorCode.Internal,
              `the guest did not finish within ${Math.round(opts.timeoutMs / 1000)}s`,
              `see 'banger vm health ${target.vmName}'`,
            ),
          );
        else
          try {
            resolve({
              code,
              signal,
              stdout: stdout.buffer(),
              stderr: stderr.buffer().toString("utf8"),
            });
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
      });
    });
  }
}
