import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { shellQuote } from "../guest/ssh.js";
import { MAX_OUTPUT_BYTES_CEILING, type CommandRunner } from "../system/runner.js";

// The host repository a workspace comes from: finding it, and checking the refs and branch
// names a workspace is given, all before the guest is touched.

export interface HostRepo {
  /** `git rev-parse --show-toplevel`. */
  top: string;
  /** The repository's own git dir (a linked worktree's differs from the common one). */
  gitDir: string;
  /** Objects, refs and config: the main `.git` of a linked worktree. */
  commonDir: string;
}

/** Host git in `cwd`. */
export async function git(
  runner: CommandRunner,
  cwd: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  // The host's own repo: `ls-files` of a huge one may well pass the runner's default cap.
  return runner.run("git", ["-C", cwd, ...args], {
    timeoutMs: 120_000,
    maxOutputBytes: MAX_OUTPUT_BYTES_CEILING,
  });
}

/** The repo that holds `dir`; a clear error when there is none. */
export async function findRepo(runner: CommandRunner, dir: string): Promise<HostRepo> {
  const stat = await fsp.stat(dir).catch(() => null);
  if (!stat?.isDirectory())
    throw new BangerError(
      ErrorCode.NotFound,
      `${dir} is not a directory`,
      "give the path of a git checkout on this machine",
    );
  const r = await git(runner, dir, [
    "rev-parse",
    "--show-toplevel",
    "--absolute-git-dir",
    "--git-common-dir",
  ]);
  const [top, gitDir, commonDir] = r.stdout.split("\n");
  if (r.code !== 0 || !top || !gitDir || !commonDir) {
    // git refuses some repositories for reasons of its own (another user's, a bare one): say which.
    const reason = r.stderr
      .split("\n")
      .find((l) => l.startsWith("fatal:") && !/not a git repository/.test(l));
    throw new BangerError(
      ErrorCode.InvalidParams,
      reason
        ? `git cannot use ${dir} as a work tree: ${reason.replace(/^fatal: /, "")}`
        : `${dir} is not inside a git repository`,
      "workspaces import git checkouts: pass the path of one, or run 'git init' there first",
    );
  }
  return { top, gitDir, commonDir: path.resolve(dir, commonDir) };
}

/** `--branch`: a name git accepts for a new branch (checked before any guest I/O). */
export async function checkBranchName(
  runner: CommandRunner,
  top: string,
  name: string,
): Promise<void> {
  const bad = () =>
    new BangerError(
      ErrorCode.InvalidParams,
      `invalid branch name "${name}"`,
      "use a name git accepts, e.g. --branch feature/x ('git check-ref-format --branch' has the rules)",
    );
  if (name.startsWith("-") || name.includes("@{")) throw bad();
  const r = await git(runner, top, ["check-ref-format", "--branch", name]);
  if (r.code !== 0 || r.stdout.trim() !== name) throw bad();
}

/** `--from`: the commit a ref names on the host; unknown refs fail here, before the guest is touched. */
export async function resolveCommit(
  runner: CommandRunner,
  top: string,
  ref: string,
): Promise<string> {
  const unknown = new BangerError(
    ErrorCode.NotFound,
    `unknown ref "${ref}" in ${top}`,
    `give a branch, tag or commit of that repo ('git -C ${shellQuote(top)} log --oneline' lists commits)`,
  );
  if (ref.startsWith("-")) throw unknown;
  const r = await git(runner, top, ["rev-parse", "--verify", "--quiet", `${ref}^{commit}`]);
  const sha = r.stdout.trim();
  if (r.code !== 0 || !/^[0-9a-f]{40,64}$/.test(sha)) throw unknown;
  return sha;
}
