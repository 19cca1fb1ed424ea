import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";

export interface RunOptions {
  input?: string | Buffer;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called with each complete line of stderr as it arrives (progress from long tools). */
  onStderrLine?: (line: string) => void;
  /** Kills the child when aborted. */
  signal?: AbortSignal;
}

export interface CommandResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

/** The seam through which banger runs host tools; tests substitute their own. */
export interface CommandRunner {
  run(cmd: string, args: string[], opts?: RunOptions): Promise<CommandResult>;
  which(cmd: string): Promise<string | null>;
}

// e2fsprogs lives in /usr/sbin, which non-root PATHs often lack.
const EXTRA_PATH = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

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
      const resolved = await which(cmd);
      if (!resolved) {
        throw new BangerError(
          ErrorCode.Precondition,
          `${cmd} is not installed`,
          "run 'banger doctor' to see what is missing and how to install it",
        );
      }
      return new Promise((resolve, reject) => {
        const child = spawn(resolved, args, {
          cwd: opts.cwd,
          env: opts.env ?? env,
          stdio: ["pipe", "pipe", "pipe"],
        });
        const stdout: Buffer[] = [];
        const stderr: Buffer[] = [];
        child.stdout.on("data", (c: Buffer) => stdout.push(c));
        let partial = "";
        child.stderr.on("data", (c: Buffer) => {
          stderr.push(c);
          if (!opts.onStderrLine) return;
          const lines = (partial + c.toString("utf8")).split("\n");
          partial = lines.pop() ?? "";
          for (const line of lines) opts.onStderrLine(line);
        });
        const onAbort = () => child.kill("SIGKILL");
        opts.signal?.addEventListener("abort", onAbort, { once: true });
        const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60_000);
        child.on("error", (err) => {
          clearTimeout(timer);
          reject(err);
        });
        child.on("close", (code, signal) => {
          clearTimeout(timer);
          opts.signal?.removeEventListener("abort", onAbort);
          resolve({
            code,
            signal,
            stdout: Buffer.concat(stdout).toString("utf8"),
            stderr: Buffer.concat(stderr).toString("utf8"),
          });
        });
        // A child that exits without reading its stdin must not crash us with EPIPE.
        child.stdin.on("error", () => {});
        child.stdin.end(opts.input ?? "");
      });
    },
  };
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
    const status = result.signal
      ? `was killed by ${result.signal}`
      : `exited with status ${result.code}`;
    const tail = result.stderr.trim().split("\n").slice(-5).join("\n");
    throw new BangerError(ErrorCode.Internal, `${cmd} ${status}${tail ? `:\n${tail}` : ""}`);
  }
  return result;
}
