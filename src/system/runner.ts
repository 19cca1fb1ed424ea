import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { StringDecoder } from "node:string_decoder";
import { BangerError, ErrorCode } from "../api/errors.js";
import { formatSizeBytes } from "../util/size.js";
import { tailLines } from "../util/terminal-text.js";

export interface RunOptions {
  input?: string | Buffer;
  /** Kills the child's whole process group after this long (default 60 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called with each line of stderr as it arrives (progress from long tools), the last one too. */
  onStderrLine?: (line: string) => void;
  /** The same for stdout (a build's steps and what they print). */
  onStdoutLine?: (line: string) => void;
  /** Kills the child's whole process group when aborted; an already-aborted signal runs nothing. */
  signal?: AbortSignal;
  /**
   * Most bytes kept of stdout, and of stderr, each (default DEFAULT_MAX_OUTPUT_BYTES, at most
   * MAX_OUTPUT_BYTES_CEILING). Past it the child's process group is killed and the call rejects
   * with an OutputTooLargeError: what a command prints never grows our memory without bound.
   */
  maxOutputBytes?: number;
}

export interface CommandResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** True when the runner killed the command for running past its timeout. */
  timedOut?: boolean;
}

/** The seam through which banger runs host tools; tests substitute their own. */
export interface CommandRunner {
  run(cmd: string, args: string[], opts?: RunOptions): Promise<CommandResult>;
  which(cmd: string): Promise<string | null>;
}

export const DEFAULT_TIMEOUT_MS = 60_000;
/** Per-stream cap on buffered output for a call that does not set its own. */
export const DEFAULT_MAX_OUTPUT_BYTES = 8 * 1024 * 1024;
/** Larger caps are lowered to this: a string near 512 MiB cannot even be made in Node. */
export const MAX_OUTPUT_BYTES_CEILING = 256 * 1024 * 1024;
// onStderrLine gets a line at most this long; a longer one arrives in pieces.
const MAX_LINE_CHARS = 64 * 1024;

/** A command printed more than its call's cap; it was killed and its output dropped. */
export class OutputTooLargeError extends BangerError {
  constructor(
    readonly command: string,
    readonly stream: "stdout" | "stderr",
    readonly limit: number,
  ) {
    super(
      ErrorCode.Internal,
      `${command} printed more than ${formatSizeBytes(limit)} on ${stream}: output too large, so banger stopped it`,
    );
    this.name = "OutputTooLargeError";
  }
}

/** The cap a call asked for, within bounds. */
export function outputCap(requested: number | undefined): number {
  const n = requested ?? DEFAULT_MAX_OUTPUT_BYTES;
  return Math.max(1, Math.min(Number.isFinite(n) ? Math.floor(n) : 0, MAX_OUTPUT_BYTES_CEILING));
}

/**
 * Keeps a stream's chunks up to `limit` bytes. The chunk that would pass it drops everything
 * kept so far and calls `onOverflow` once; later chunks are ignored.
 */
export class BoundedBuffer {
  private chunks: Buffer[] = [];
  private bytes = 0;
  overflowed = false;

  constructor(
    private readonly limit: number,
    private readonly onOverflow: () => void,
  ) {}

  push(chunk: Buffer): void {
    if (this.overflowed) return;
    if (this.bytes + chunk.length > this.limit) {
      this.overflowed = true;
      this.chunks = [];
      this.bytes = 0;
      this.onOverflow();
      return;
    }
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  get length(): number {
    return this.bytes;
  }

  buffer(): Buffer {
    return Buffer.concat(this.chunks, this.bytes);
  }
}

// A background grandchild can hold stdout/stderr open long after the command exits; once it has
// exited, output still in flight gets this long to arrive before the pipes are closed on our side.
const EXIT_GRACE_MS = 200;

// e2fsprogs lives in /usr/sbin, which non-root PATHs often lack.
const EXTRA_PATH = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/**
 * Runs host tools, each in its own process group: a timeout or abort kills the whole group, and
 * the result comes back shortly after the tool exits even if something it started keeps the pipes.
 */
export function createCommandRunner(env: NodeJS.ProcessEnv = process.env): CommandRunner {
  const searchPath = [...(env.PATH ?? "").split(":").filter(Boolean), ...EXTRA_PATH];
  const which = async (cmd: string): Promise<string | null> => {
    if (cmd.includes("/")) return (await isExecutable(cmd)) ? cmd : null;
    for (const dir of searchPath) {
      const candidate = path.join(dir, cmd);
      if (await isExecutable(candidate)) return candidate;
    }
    return null;
  };
  return {
    which,
    async run(cmd, args, opts = {}) {
      if (opts.signal?.aborted) throw cancelled(cmd);
      const resolved = await which(cmd);
      if (!resolved) {
        throw new BangerError(
          ErrorCode.Precondition,
          `${cmd} is not installed`,
          "run 'banger doctor' to see what is missing and how to install it",
        );
      }
      // spawn reports a missing cwd as ENOENT, which reads like a missing command.
      if (opts.cwd !== undefined) await checkWorkingDirectory(cmd, opts.cwd);
      if (opts.signal?.aborted) throw cancelled(cmd);
      return spawnAndCollect(resolved, args, opts, env);
    },
  };
}

function spawnAndCollect(
  file: string,
  args: string[],
  opts: RunOptions,
  env: NodeJS.ProcessEnv,
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout or abort also kills whatever the command started.
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env ?? env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: true,
    });
    const cap = outputCap(opts.maxOutputBytes);
    let overflow: "stdout" | "stderr" | null = null;
    const stdout = new BoundedBuffer(cap, () => tooMuch("stdout"));
    const stderr = new BoundedBuffer(cap, () => tooMuch("stderr"));
    let timedOut = false;
    let exited: { code: number | null; signal: string | null } | undefined;
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;
    let graceRound = 0;

    // After the exit, wait until the pipes have been quiet for the grace period. The check runs
    // from setImmediate so that, after a stall of the event loop, pending reads land first.
    const armGrace = () => {
      const round = ++graceRound;
      clearTimeout(graceTimer);
      graceTimer = setTimeout(
        () => setImmediate(() => round === graceRound && finish()),
        EXIT_GRACE_MS,
      );
    };
    const stdoutLines = lineSplitter(opts.onStdoutLine);
    const stderrLines = lineSplitter(opts.onStderrLine);
    child.stdout.on("data", (c: Buffer) => {
      stdout.push(c);
      if (exited) armGrace();
      if (!overflow) stdoutLines.write(c);
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr.push(c);
      if (exited) armGrace();
      if (!overflow) stderrLines.write(c);
    });

    // Once the command itself has exited, what is left of its group may be a tool's own daemon:
    // stop waiting for it, but leave it be.
    const stop = (why: "timeout" | "abort" | "overflow") => {
      if (exited) return finish();
      if (child.pid === undefined) return; // never started: 'error' settles the promise
      if (why === "timeout") timedOut = true;
      killGroup(child);
    };
    const tooMuch = (stream: "stdout" | "stderr") => {
      overflow ??= stream;
      stop("overflow");
    };
    const onAbort = () => stop("abort");
    const timer = setTimeout(() => stop("timeout"), opts.timeoutMs ?? DEFAULT_TIMEOUT_MS);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    const cleanup = () => {
      settled = true;
      clearTimeout(timer);
      clearTimeout(graceTimer);
      opts.signal?.removeEventListener("abort", onAbort);
    };
    const finish = () => {
      if (settled || !exited) return;
      cleanup();
      // Whatever still holds the pipes (a background grandchild) no longer keeps us waiting.
      child.stdout.destroy();
      child.stderr.destroy();
      if (overflow) {
        reject(new OutputTooLargeError(path.basename(file), overflow, cap));
        return;
      }
      stdoutLines.end();
      stderrLines.end();
      try {
        resolve({
          ...exited,
          stdout: stdout.buffer().toString("utf8"),
          stderr: stderr.buffer().toString("utf8"),
          timedOut,
        });
      } catch (err) {
        // Within the cap this cannot happen; if it ever does, it is this call's error, not a crash.
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    };
    child.on("error", (err) => {
      if (settled) return;
      cleanup();
      reject(err);
    });
    child.on("exit", (code, signal) => {
      exited = { code, signal };
      armGrace();
    });
    child.on("close", finish);
    // A child that exits without reading its stdin must not crash us with EPIPE.
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input ?? "");
  });
}

/** Feeds a stream's chunks to `onLine` line by line (none when it is absent), the last one too. */
function lineSplitter(onLine: ((line: string) => void) | undefined): {
  write(chunk: Buffer): void;
  end(): void;
} {
  const decoder = new StringDecoder("utf8");
  let partial = "";
  // The callback is the caller's: whatever it throws must not escape from an event handler.
  const emit = (line: string) => {
    try {
      onLine?.(line);
    } catch {
      // a progress callback's failure is not the command's
    }
  };
  return {
    write(chunk) {
      if (!onLine) return;
      const lines = (partial + decoder.write(chunk)).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) emit(line);
      // A "line" that never ends arrives in pieces rather than piling up here.
      while (partial.length > MAX_LINE_CHARS) {
        emit(partial.slice(0, MAX_LINE_CHARS));
        partial = partial.slice(MAX_LINE_CHARS);
      }
    },
    end() {
      if (!onLine) return;
      partial += decoder.end();
      if (partial) emit(partial);
      partial = "";
    },
  };
}

/** SIGKILL to a child spawned `detached` and to its whole process group. */
export function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, "SIGKILL");
  } catch {
    child.kill("SIGKILL");
  }
}

function cancelled(cmd: string): BangerError {
  return new BangerError(ErrorCode.Cancelled, `cancelled before ${cmd} started`);
}

async function checkWorkingDirectory(cmd: string, dir: string): Promise<void> {
  const stat = await fs.stat(dir).catch(() => undefined);
  if (stat?.isDirectory()) return;
  throw new BangerError(
    ErrorCode.Precondition,
    `cannot run ${cmd} in ${dir}: ${stat ? "it is not a directory" : "no such directory"}`,
    "check the path, or create the directory first",
  );
}

async function isExecutable(file: string): Promise<boolean> {
  try {
    await fs.access(file, fs.constants.X_OK);
    return (await fs.stat(file)).isFile();
  } catch {
    return false;
  }
}

/** Run and insist on success; the error names the command, its status and the end of its stderr. */
export async function runChecked(
  runner: CommandRunner,
  cmd: string,
  args: string[],
  opts?: RunOptions,
): Promise<CommandResult> {
  const result = await runner.run(cmd, args, opts);
  if (result.code !== 0) {
    const status = result.timedOut
      ? `timed out after ${formatSeconds(opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS)} s`
      : result.signal
        ? `was killed by ${result.signal}`
        : `exited with status ${result.code}`;
    const tail = tailLines(result.stderr);
    throw new BangerError(ErrorCode.Internal, `${cmd} ${status}${tail ? `:\n${tail}` : ""}`);
  }
  return result;
}

function formatSeconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
