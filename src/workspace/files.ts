import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { CommandRunner } from "../system/runner.js";
import { git } from "./repo.js";

// What of a host repository travels to the guest: the work tree's files and the git dir's allow-list.

/** Tar's on-the-wire size of one member: a header block plus the data rounded up to blocks. */
function tarBytes(size: number): number {
  return 512 + Math.ceil(size / 512) * 512;
}

/**
 * What `git ls-files -z --cached --others --exclude-standard` lists, minus tracked
 * files deleted from the work tree. Names are relative to the toplevel.
 */
export async function listWorkTree(
  runner: CommandRunner,
  top: string,
): Promise<{ names: string[]; bytes: number }> {
  const r = await git(runner, top, [
    "ls-files",
    "-z",
    "--cached",
    "--others",
    "--exclude-standard",
  ]);
  if (r.code !== 0)
    throw new BangerError(ErrorCode.Internal, `git ls-files failed in ${top}: ${r.stderr.trim()}`);
  const names: string[] = [];
  let bytes = 0;
  const seen = new Set<string>();
  for (const raw of r.stdout.split("\0")) {
    // Untracked nested repositories are listed as "dir/": they arrive as an empty directory.
    const name = raw.endsWith("/") ? raw.slice(0, -1) : raw;
    if (!name || seen.has(name)) continue; // unmerged paths are listed once per stage
    seen.add(name);
    const st = await fsp.lstat(path.join(top, name)).catch(() => null);
    if (!st) {
      if (name.includes("\uFFFD"))
        throw new BangerError(
          ErrorCode.InvalidParams,
          `${top} holds a file name that is not valid UTF-8 (${JSON.stringify(name)})`,
          "rename it; banger imports UTF-8 file names only",
        );
      continue; // tracked, but deleted from the work tree
    }
    names.push(name);
    bytes += tarBytes(st.isFile() ? st.size : 0);
  }
  return { names, bytes };
}

/**
 * What of a git dir travels, by top-level name; everything else stays home. Left out on
 * purpose: `config` and `config.worktree` (the guest gets a scrubbed config instead), `hooks/`
 * (commands), `modules/` (each submodule's own config and hooks; submodules arrive empty
 * anyway), `worktrees/` (host paths), `FETCH_HEAD`, `remotes/` and `branches/` (remote URLs,
 * which may carry credentials), and anything a tool or a user put there (a credential store,
 * say).
 */
export const GIT_DIR_SENT = new Set([
  "HEAD",
  "index",
  "objects",
  "refs",
  "packed-refs",
  // git 2.45+'s reftable ref storage (extensions.refstorage is kept in the scrubbed config).
  "reftable",
  "logs",
  "info",
  "shallow",
  "description",
  "COMMIT_EDITMSG",
  "ORIG_HEAD",
  "MERGE_HEAD",
  "MERGE_MSG",
  "MERGE_MODE",
  "MERGE_RR",
  "AUTO_MERGE",
  "CHERRY_PICK_HEAD",
  "REVERT_HEAD",
  "BISECT_LOG",
  "BISECT_START",
  "BISECT_TERMS",
  "BISECT_NAMES",
  "BISECT_EXPECTED_REV",
  "BISECT_ANCESTORS_OK",
  "rebase-merge",
  "rebase-apply",
  "sequencer",
  "rr-cache",
  "lfs",
]);

/** Every entry under a git dir (directories too, so empty refs/ dirs survive), pre-order. */
export async function walkGitDir(
  root: string,
  skip: (rel: string, isDir: boolean) => boolean,
): Promise<{ names: string[]; bytes: number }> {
  const names: string[] = [];
  let bytes = 0;
  const visit = async (rel: string) => {
    const entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
    for (const e of entries) {
      const child = rel ? `${rel}/${e.name}` : e.name;
      // Lock files are a host git command caught mid-write; in the guest they would block git.
      if (e.name.endsWith(".lock") || (rel === "" && !GIT_DIR_SENT.has(e.name))) continue;
      if (skip(child, e.isDirectory())) continue;
      names.push(child);
      if (e.isDirectory()) {
        bytes += 512;
        await visit(child);
      } else {
        bytes += tarBytes(e.isFile() ? (await fsp.lstat(path.join(root, child))).size : 0);
      }
    }
  };
  await visit("");
  return { names, bytes };
}
