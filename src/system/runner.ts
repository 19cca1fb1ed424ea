import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";

export interface RunOptions {
  input?: string | Buffer;
  /** Kills the child's whole process group after this long (default 60 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called with each line of stderr as it arrives (progress from long tools), the last one too. */
  onStderrLine?: (line: string) => void;
  /** Kills the child's whole process group when aborted; an already-aborted signal runs nothing. */
  signal?: AbortSignal;
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
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    let partial = "";
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
    child.stdout.on("data", (c: Buffer) => {
      stdout.push(c);
      if (exited) armGrace();
    });
    child.stderr.on("data", (c: Buffer) => {
      stderr.push(c);
      if (exited) armGrace();
      if (!opts.onStderrLine) return;
      const lines = (partial + c.toString("utf8")).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) opts.onStderrLine(line);
    });

    // Once the command itself has exited, what is left of its group may be a tool's own daemon:
    // stop waiting for it, but leave it be.
    const stop = (why: "timeout" | "abort") => {
      if (exited) return finish();
      if (child.pid === undefined) return; // never started: 'error' settles the promise
      if (why === "timeout") timedOut = true;
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
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
      if (partial && opts.onStderrLine) opts.onStderrLine(partial);
      resolve({
        ...exited,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
        timedOut,
      });
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
    const tail = result.stderr.trim().split("\n").slice(-5).join("\n");
    throw new BangerError(ErrorCode.Internal, `${cmd} ${status}${tail ? `:\n${tail}` : ""}`);
  }
  return result;
}

function formatSeconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
