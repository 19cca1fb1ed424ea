import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { tailLines } from "../util/terminal-text.js";
import { scriptRemoteCommand } from "./scripts.js";

/**
 * Workspaces, guest side: a host git repo arrives as tar over SSH and the guest's changes go
 * back as a patch, both through guest-scripts/workspace.sh. The host side (finding the repo,
 * listing what to send, the scrubbed config, the tar stream) is src/workspace/.
 */

/**
 * Where banger keeps its own guest-side files (on the work disk, like the workspaces); the
 * script records the last prepared workspace's path in `<state>/workspace` for `export`.
 */
export const GUEST_STATE_DIR = "/root/.banger";
/**
 * The content of the import archive's last member, COMMIT_MEMBER, sent only when every host tar
 * succeeded: the guest swaps in nothing without it. The host never sends `.git/banger/` itself
 * (GIT_DIR_SENT), so no file of the repo can stand in for it; the guest removes it.
 */
export const COMMIT_MARKER = "BANGER-WORKSPACE-COMMIT";
/** Where the marker lands in the new workspace (workspace.sh looks there). */
export const COMMIT_MEMBER = ".git/banger/commit";

/** Exit statuses of the guest script that mean something specific (workspace.sh exits with them). */
export const GuestStatus = {
  NoGit: 10,
  NoWorkspace: 11,
  Incomplete: 12,
} as const;

/** $0 of workspace.sh, so its messages and `ps` name it. */
export const WORKSPACE_SCRIPT_NAME = "banger-workspace";

/** Where one part of the import archive lands, relative to the new workspace. */
export type ImportDest = "." | ".git";

/** /root/<repo-name>; names the guest shell scripts could not carry are refused. */
export function guestDirFor(top: string): string {
  const name = path.basename(top);
  if (!name || /[\x00-\x1f\x7f]/.test(name) || name === "." || name === "..")
    throw new BangerError(
      ErrorCode.InvalidParams,
      `the repository directory name ${JSON.stringify(name)} cannot be used in the guest`,
      "rename the checkout's directory (no control characters or newlines)",
    );
  // /root/.ssh, /root/.config, /root/.banger hold banger's key, synced files and its own
  // state: an import replaces its directory whole, so a dot-name would wipe one of them.
  if (name.startsWith("."))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `the repository directory name "${name}" starts with a dot: importing it would replace /root/${name} in the guest`,
      "clone or move the checkout to a directory whose name does not start with '.'",
    );
  return `/root/${name}`;
}

export interface ImportOptions {
  dir: string;
  /** --from, resolved to a commit on the host. */
  from?: string | undefined;
  branch?: string | undefined;
  /** The guest's .git/config (scrubbedGitConfig); the host's own never travels. */
  gitConfig?: string;
}

/**
 * `import`: fed one tar archive on stdin, the commit member last; prints `base <object>` last,
 * or `no-git` when the guest has no git (the files are there, no base is recorded). `stateDir`
 * is for tests that run the script on the host.
 */
export function workspaceImportArgs(opts: ImportOptions, stateDir = GUEST_STATE_DIR): string[] {
  return [
    "import",
    stateDir,
    COMMIT_MARKER,
    opts.dir,
    opts.gitConfig ?? "",
    opts.from ?? "",
    opts.branch ?? "",
  ];
}

/** `export`: the workspace dir and base on two lines, then the patch (or NUL-separated names). */
export function workspaceExportArgs(
  opts: { nameOnly: boolean },
  stateDir = GUEST_STATE_DIR,
): string[] {
  return ["export", stateDir, opts.nameOnly ? "names" : "patch"];
}

/** The remote command line for OpenSSH: workspace.sh with `args` (see above). */
export function workspaceRemoteCommand(script: string, args: string[]): string {
  return scriptRemoteCommand(script, WORKSPACE_SCRIPT_NAME, args);
}

/** The end of a guest script's stderr, without its "banger: " prefixes, for an error message. */
export function guestStderrTail(stderr: string): string {
  return tailLines(stderr, 6)
    .split("\n")
    .map((l) => l.replace(/^banger: /, ""))
    .join("\n");
}

/** What needed git in a guest that has none. */
export type NeedsGit = "export" | "checkout";

/** Where git comes from: an image that has it; one VM's install comes too late for its workspace. */
const GIT_IMAGE_HINT =
  "the default debian-bookworm image has it; for another image, add git to the image itself (e.g. 'RUN apt-get install -y git' in its Dockerfile)";

export function noGitError(vm: string, needs: NeedsGit): BangerError {
  if (needs === "checkout")
    return new BangerError(
      ErrorCode.Precondition,
      `--from and --branch check a commit out in the guest, and VM ${vm} has no git; nothing was changed`,
      `leave them out to import the work tree as it is (that needs no git in the guest), or use an image with git: ${GIT_IMAGE_HINT}`,
    );
  return new BangerError(
    ErrorCode.Precondition,
    `workspace export needs git in the guest, and VM ${vm} has none`,
    `use an image with git and prepare the workspace there: ${GIT_IMAGE_HINT}`,
  );
}

/** What a failed export script run means (the daemon's and the CLI's streaming export share it). */
export function exportError(
  vm: string,
  r: { code: number | null; signal: string | null; stderr: string },
): BangerError {
  if (r.code === GuestStatus.NoGit) return noGitError(vm, "export");
  if (r.code === GuestStatus.NoWorkspace)
    return new BangerError(
      ErrorCode.InvalidState,
      `no workspace in VM ${vm}: ${guestStderrTail(r.stderr)}`,
      `import one first: 'banger vm workspace prepare ${vm} <path>'`,
    );
  return new BangerError(
    ErrorCode.Internal,
    `could not export the workspace of ${vm}: ${guestStderrTail(r.stderr) || `ssh exited with status ${r.code ?? r.signal}`}`,
    r.code === 255 ? `SSH failed: 'banger vm health ${vm}' checks the VM` : undefined,
  );
}

/** The export script's two header lines (workspace dir, base) are at most this long together. */
export const EXPORT_HEADER_MAX_BYTES = 64 * 1024;
