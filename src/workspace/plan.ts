import path from "node:path";
import { guestDirFor, type ImportDest } from "../guest/workspace.js";
import type { CommandRunner } from "../system/runner.js";
import { listWorkTree, walkGitDir } from "./files.js";
import { scrubbedGitConfig } from "./git-config.js";
import type { HostRepo } from "./repo.js";

/** One tar archive of the stream: `names` relative to `root`, extracted under `dest` in the guest. */
export interface TarPart {
  root: string;
  /** Relative to the guest's import dir: "." or ".git". */
  dest: ImportDest;
  names: string[];
}

export interface WorkspacePlan {
  repo: HostRepo;
  /** Guest directory: /root/<basename of the toplevel>. */
  dir: string;
  parts: TarPart[];
  /** Work-tree entries sent (not counting .git). */
  files: number;
  /** The guest's .git/config: the host's, scrubbed (see scrubGitConfig). */
  gitConfig: string;
  /** Rough size of the tar stream, for progress. */
  estimatedBytes: number;
}

/**
 * What goes over the wire: the work tree (unless `withWorkTree` is false, as for
 * --from, whose files the guest checks out itself), then the git dir. A linked
 * worktree's `.git` is a file pointing elsewhere, so the guest gets the common dir
 * with the worktree's own HEAD and index laid over it: a standalone repository.
 */
export async function planWorkspace(
  runner: CommandRunner,
  repo: HostRepo,
  opts: { withWorkTree: boolean },
): Promise<WorkspacePlan> {
  const parts: TarPart[] = [];
  let files = 0;
  let estimatedBytes = 0;
  if (opts.withWorkTree) {
    const tree = await listWorkTree(runner, repo.top);
    parts.push({ root: repo.top, dest: ".", names: tree.names });
    files = tree.names.length;
    estimatedBytes += tree.bytes;
  }
  // Only GIT_DIR_SENT travels: a linked worktree's own dir (commondir, gitdir) names host paths.
  const common = await walkGitDir(repo.commonDir, () => false);
  parts.push({ root: repo.commonDir, dest: ".git", names: common.names });
  estimatedBytes += common.bytes;
  if (path.resolve(repo.gitDir) !== path.resolve(repo.commonDir)) {
    const own = await walkGitDir(repo.gitDir, () => false);
    parts.push({ root: repo.gitDir, dest: ".git", names: own.names });
    estimatedBytes += own.bytes;
  }
  const gitConfig = await scrubbedGitConfig(runner, repo);
  return { repo, dir: guestDirFor(repo.top), parts, files, gitConfig, estimatedBytes };
}
