import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { spawn } from "node:child_process";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { guestDirFor } from "../guest/workspace.js";
import { checkBranchName, findRepo, resolveCommit } from "../workspace/repo.js";
import { createCommandRunner } from "../system/runner.js";
import { remoteCommand } from "../guest/image-env.js";
import { endpointSshArgs, guestSshEnv } from "../guest/ssh.js";
import type { DaemonClient } from "./client.js";
import { ExitStatus, withDaemon, type CliDeps } from "./context.js";
import { createProgressRenderer } from "./progress.js";
import { resolvedDefaultsHelp, resolveSizing, vmSizingOptions } from "./vm-options.js";

/** The remote command's own exit status: the only status `vm run` passes through as its own. */
export class RemoteExit extends ExitStatus {}

export interface RunOptions {
  name?: string;
  image?: string;
  vcpu?: string;
  memory?: string;
  diskSize?: string;
  nat?: boolean;
  cold?: boolean;
  rm?: boolean;
  branch?: string;
  from?: string;
  tty?: boolean;
}

/** `[path] [-- cmd...]`: what is before `--` and what is after it. */
export interface RunOperands {
  path: string | null;
  cmd: string[];
}

/**
 * Splits commander's operands at the `--` the user typed: `vm run -- uname -a`
 * has no path, `vm run ./repo -- make test` has one. Without `--`, a single
 * operand is the path and more than one is a mistake worth explaining.
 */
export function splitRunOperands(operands: string[], beforeDash: number | null): RunOperands {
  const before = beforeDash === null ? operands : operands.slice(0, beforeDash);
  const after = beforeDash === null ? [] : operands.slice(beforeDash);
  if (before.length > 1) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `'banger vm run' takes at most one path before the command, got: ${before.join(" ")}`,
      "put the command after --, e.g. 'banger vm run ./repo -- make test' or 'banger vm run -- uname -a'",
    );
  }
  return { path: before[0] ?? null, cmd: after };
}

/** Git facts checked on the host before any VM exists, with the daemon's own checks, so a typo costs nothing. */
async function checkRepo(repo: string, opts: RunOptions): Promise<void> {
  const runner = createCommandRunner();
  const { top } = await findRepo(runner, repo);
  guestDirFor(top);
  if (opts.from) await resolveCommit(runner, top, opts.from);
  if (opts.branch) await checkBranchName(runner, top, opts.branch);
}

/** Exit status of the local ssh: the remote command's, 255 for ssh's own failure, 128+n for a signal. */
function runSsh(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn("ssh", args, { stdio: "inherit", env: guestSshEnv(process.env) });
    child.on("error", (err) =>
      reject(
        new BangerError(
          ErrorCode.Precondition,
          `could not run ssh: ${err.message}`,
          "install OpenSSH's client: 'sudo apt-get install openssh-client'",
        ),
      ),
    );
    child.on("close", (code, signal) => resolve({ code, signal }));
  });
}

const SIGNAL_NUMBERS: Partial<Record<NodeJS.Signals, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGTERM: 15,
};

/**
 * `banger vm run`: create a VM, import the repo, run the command or a shell over
 * SSH, and (with --rm) delete the VM whatever happened. Ctrl-C never skips that
 * delete: SIGINT is held for the whole run and only cancels the step in flight.
 */
export async function runVm(
  deps: CliDeps,
  operands: RunOperands,
  opts: RunOptions,
  env: { stdinIsTTY: boolean } = { stdinIsTTY: process.stdin.isTTY === true },
): Promise<void> {
  if (!operands.path && (opts.branch || opts.from)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${opts.branch ? "--branch" : "--from"} needs a repository path`,
      "e.g. 'banger vm run ./repo --branch try-fix -- make test'",
    );
  }
  const repo = operands.path ? path.resolve(operands.path) : null;
  if (repo) await checkRepo(repo, opts);
  const { vcpu, memoryBytes, diskBytes } = resolveSizing(deps, opts);

  // Ctrl-C cancels the step in flight (by closing its connection); it never kills us
  // before the clean-up below. OpenSSH in the foreground gets its own SIGINT.
  let interrupted = false;
  let inFlight: DaemonClient | null = null;
  const onSigint = () => {
    interrupted = true;
    inFlight?.close();
  };
  process.on("SIGINT", onSigint);
  const step = async <T>(fn: (c: DaemonClient) => Promise<T>): Promise<T> => {
    if (interrupted) throw new BangerError(ErrorCode.Cancelled, "interrupted");
    const client = await deps.connect();
    if (interrupted) {
      client.close();
      throw new BangerError(ErrorCode.Cancelled, "interrupted");
    }
    inFlight = client;
    try {
      return await fn(client);
    } catch (err) {
      if (interrupted) throw new BangerError(ErrorCode.Cancelled, "interrupted");
      throw err;
    } finally {
      inFlight = null;
      client.close();
    }
  };

  let name: string | null = null;
  const keep = !opts.rm;
  let keptForLogs = false;
  let failure: { err: unknown } | null = null;
  let deleted = false;
  try {
    const progress = createProgressRenderer(deps.out);
    const info = await (async () => {
      for (let attempt = 0; ; attempt++) {
        // (node:crypto, behind randomVmName, is not loaded for commands that name no VM)
        const wanted = opts.name ?? (await import("../api/vm-names.js")).randomVmName();
        try {
          name = wanted;
          return await step((c) =>
            c.call(
              "vm.create",
              {
                name: wanted,
                ...(opts.image ? { image: opts.image } : {}),
                vcpu,
                memoryBytes,
                diskBytes,
                nat: opts.nat ?? false,
                ...(opts.cold ? { cold: true } : {}),
              },
              { onProgress: progress.report },
            ),
          );
        } catch (err) {
          // A generated name that is taken: try another. A name the user gave is theirs to fix.
          const taken = err instanceof BangerError && err.code === ErrorCode.AlreadyExists;
          if (taken) name = null;
          if (taken && !opts.name && attempt < 5) continue;
          // Without --rm a boot that failed is kept (running or stopped): 'vm logs', which its
          // error names, works. With --rm it goes like any other: the error quotes its console.
          if (err instanceof BangerError && BOOT_FAILURES.has(err.code)) keptForLogs = keep;
          throw err;
        }
      }
    })().finally(() => progress.done());
    for (const w of info.warnings) deps.out.stderr.write(`warning: ${w}\n`);

    // No workspace: the image's WorkingDir (else root's home), read in the guest.
    let dir: string | null = null;
    if (repo) {
      const wsProgress = createProgressRenderer(deps.out);
      const ws = await step((c) =>
        c.call(
          "vm.workspace.prepare",
          {
            name: info.name,
            path: repo,
            ...(opts.branch ? { branch: opts.branch } : {}),
            ...(opts.from ? { from: opts.from } : {}),
          },
          { onProgress: wsProgress.report },
        ),
      ).finally(() => wsProgress.done());
      dir = ws.dir;
    }

    const target = await step((c) => c.call("vm.ssh", { name: info.name }));
    const tty = opts.tty ?? (operands.cmd.length === 0 && env.stdinIsTTY);
    const args = [
      ...endpointSshArgs(info.name, target, [tty ? "-t" : "-T"]),
      "--",
      remoteCommand(dir, operands.cmd),
    ];
    if (interrupted) throw new BangerError(ErrorCode.Cancelled, "interrupted");
    const { code, signal } = await runSsh(args);
    if (signal || interrupted) {
      const n = (signal && SIGNAL_NUMBERS[signal]) ?? 2;
      deps.out.stderr.write(`banger: interrupted${signal ? ` (${signal})` : ""}\n`);
      throw new ExitStatus(128 + n);
    }
    if (code === 255) {
      throw new BangerError(
        ErrorCode.Internal,
        `ssh to VM ${info.name} exited with status 255: the connection failed (or the command itself exited 255)`,
        `'banger vm health ${info.name}' checks SSH; 'banger vm logs ${info.name}' shows the console`,
      );
    }
    if (code !== 0) throw new RemoteExit(code ?? 1);
  } catch (err) {
    if (interrupted && !(err instanceof ExitStatus)) {
      deps.out.stderr.write("banger: interrupted\n");
      failure = { err: new ExitStatus(130) };
    } else failure = { err };
  } finally {
    // Held against a second Ctrl-C until the clean-up is done: it would leave the VM behind.
    const hold = () => deps.out.stderr.write(`banger: cleaning up, please wait\n`);
    process.on("SIGINT", hold);
    process.off("SIGINT", onSigint);
    try {
      if (name !== null) deleted = await finish(deps, name, keep, keptForLogs);
    } finally {
      process.off("SIGINT", hold);
    }
  }
  if (failure) throw deleted && name !== null ? afterDelete(failure.err, name) : failure.err;
}

/** Failures of the boot itself: without --rm the VM is kept for 'vm logs'. */
const BOOT_FAILURES = new Set<number>([ErrorCode.SshTimeout, ErrorCode.BootFailed]);

/**
 * The error once --rm has deleted its VM: a hint naming that VM ('vm logs', 'vm start',
 * 'vm delete' it) would point at nothing, so it says what happened instead. The message
 * stays: a boot failure's quotes the console's last lines.
 */
function afterDelete(err: unknown, name: string): unknown {
  // Names are DNS labels: nothing in one means anything to a RegExp.
  const namesIt = new RegExp(`banger vm [a-z-]+ ${name}(?![a-z0-9-])`);
  if (!(err instanceof BangerError) || !namesIt.test(err.hint ?? "")) return err;
  const hint = BOOT_FAILURES.has(err.code)
    ? `the VM was deleted (--rm); the console's last lines are above. Without --rm a VM whose boot fails is kept for 'banger vm logs <name>'`
    : `the VM was deleted (--rm); without --rm it is kept for a look ('banger vm logs <name>')`;
  return new BangerError(err.code, err.message, hint);
}

/**
 * After the command: delete the VM (--rm) on a fresh connection, or say how to get rid of it.
 * True when it deleted the VM.
 */
async function finish(
  deps: CliDeps,
  name: string,
  keep: boolean,
  keptForLogs: boolean,
): Promise<boolean> {
  const shown = await withDaemon(deps, (c) => c.call("vm.show", { name })).then(
    (info) => info,
    (err: unknown) =>
      err instanceof BangerError && err.code === ErrorCode.NotFound ? null : undefined,
  );
  if (shown === null) return false;
  if (keptForLogs) {
    deps.out.stderr.write(
      `vm ${name} is kept${shown ? ` (${shown.state})` : ""} so you can see why: 'banger vm logs ${name}'; delete it with 'banger vm delete ${name}'\n`,
    );
    return false;
  }
  if (!keep) {
    try {
      await withDaemon(deps, (c) => c.call("vm.delete", { names: [name] }));
      return true;
    } catch (err) {
      deps.out.stderr.write(
        `banger: could not delete VM ${name}: ${(err as Error).message}; remove it with 'banger vm delete ${name}'\n`,
      );
      return false;
    }
  }
  deps.out.stderr.write(
    `vm ${name} is still running (stop with 'banger vm stop ${name}', delete with 'banger vm delete ${name}')\n`,
  );
  return false;
}

/** Records how many operands came before the `--` the user typed (commander drops it). */
function trackDash(cmd: CommandUnknownOpts): () => number | null {
  let beforeDash: number | null = null;
  const parse = cmd.parseOptions.bind(cmd);
  cmd.parseOptions = (args: string[]) => {
    const parsed = parse(args);
    const dash = args.indexOf("--");
    // Everything after the first `--` is appended to the operands verbatim.
    beforeDash = dash < 0 ? null : parsed.operands.length - (args.length - dash - 1);
    return parsed;
  };
  return () => beforeDash;
}

export function runCommand(deps: CliDeps): CommandUnknownOpts {
  const run = vmSizingOptions(
    new Command("run")
      .description("Boot a VM, import a repo, and run a command or a shell in it")
      .argument("[path]", "git repository to import into /root/<repo-name>")
      .argument("[cmd...]", "command to run after --")
      .option("--name <name>", "VM name (DNS label; generated when omitted)")
      .option("--rm", "delete the VM when the command or shell ends, whatever its exit status")
      .option("--branch <name>", "create this branch in the guest workspace (needs a path)")
      .option("--from <ref>", "base the workspace on this commit or ref (needs a path)")
      .option("-t, --tty", "give the command a terminal (default: only for an interactive shell)"),
  );
  run.addHelpText(
    "after",
    () => `
Examples:
  $ banger vm run --rm ./repo -- make test     # exit status is the command's
  $ banger vm run --rm -- uname -a             # no repo: in /root (or the image's WorkingDir)
  $ banger vm run ./repo                       # a shell in /root/repo; the VM stays
  $ banger vm run --rm ./repo --branch fix --from origin/main -- ./test.sh

Exit status: the remote command's (127 when it could not be started, 130 on Ctrl-C);
1 when banger itself fails, with a message saying why. With --rm the VM is deleted
afterwards, even on Ctrl-C or a failed boot (whose error quotes the console's last
lines); without --rm a VM whose boot failed is kept for 'banger vm logs <name>'.

Next: without --rm, 'banger vm workspace export <name> -o changes.patch' brings the
guest's changes back; 'banger vm delete <name>' when done.
${resolvedDefaultsHelp(deps)}`,
  );
  const beforeDash = trackDash(run);
  run.action(async (...args: unknown[]) => {
    const opts = args.at(-2) as RunOptions;
    const first = args[0] as string | undefined;
    const rest = (args[1] as string[] | undefined) ?? [];
    const operands = splitRunOperands(
      [...(first !== undefined ? [first] : []), ...rest],
      beforeDash(),
    );
    await runVm(deps, operands, opts);
  });
  return run;
}
