import { spawn } from "node:child_process";
import fsp from "node:fs/promises";
import path from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import { MAX_OUTPUT_BYTES_CEILING, type CommandRunner } from "../system/runner.js";
import { tailLines } from "../util/terminal-text.js";
import { shellQuote } from "./ssh.js";

/**
 * Workspaces: a host git repo streamed into a guest as tar over SSH, and the
 * guest's changes back as a patch. Host side: find the repo, list what to send,
 * produce the tar stream. Guest side: the shell scripts that extract, record
 * the base and export.
 */

/** Where banger keeps its own guest-side files (on the work disk, like the workspaces). */
export const GUEST_STATE_DIR = "/root/.banger";
/** Holds the path of the last prepared workspace: `export` reads it. */
export const GUEST_WORKSPACE_RECORD = `${GUEST_STATE_DIR}/workspace`;
/** Sent after the last tar byte only when every host tar succeeded: the guest swaps in nothing without it. */
export const COMMIT_MARKER = "BANGER-WORKSPACE-COMMIT";

/** Exit statuses of the guest scripts that mean something specific. */
export const GuestStatus = {
  NoGit: 10,
  NoWorkspace: 11,
  Incomplete: 12,
} as const;

export interface HostRepo {
  /** `git rev-parse --show-toplevel`. */
  top: string;
  /** The repository's own git dir (a linked worktree's differs from the common one). */
  gitDir: string;
  /** Objects, refs and config: the main `.git` of a linked worktree. */
  commonDir: string;
}

/** One tar archive of the stream: `names` relative to `root`, extracted under `dest` in the guest. */
export interface TarPart {
  root: string;
  /** Relative to the guest's import dir: "." or ".git". */
  dest: "." | ".git";
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

/** A running tar producer. `done` settles once every archive was written (or one failed). */
export interface TarSource {
  stream: Readable;
  done: Promise<void>;
  kill(): void;
}

export type TarSourceFactory = (parts: TarPart[]) => TarSource;

async function git(
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
async function walkGitDir(
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

/** The guest's config travels inside the script (one argument): this keeps it well under ARG_MAX. */
export const GIT_CONFIG_MAX_BYTES = 32 * 1024;

/** The host repo's own config (never ~/.gitconfig, never an include), scrubbed for the guest. */
export async function scrubbedGitConfig(runner: CommandRunner, repo: HostRepo): Promise<string> {
  const file = path.join(repo.commonDir, "config");
  const r = await runner.run("git", ["config", "--file", file, "--no-includes", "--list", "-z"], {
    timeoutMs: 60_000,
  });
  // No config at all is a config with nothing to keep.
  const listed = r.code === 0 ? r.stdout : "";
  const config = scrubGitConfig(
    listed
      .split("\0")
      .filter((e) => e !== "")
      .map((e) => {
        const nl = e.indexOf("\n");
        return nl < 0 ? { key: e, value: null } : { key: e.slice(0, nl), value: e.slice(nl + 1) };
      }),
  );
  if (Buffer.byteLength(config) > GIT_CONFIG_MAX_BYTES)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `the scrubbed .git/config of ${repo.top} is larger than ${GIT_CONFIG_MAX_BYTES / 1024} KiB (remotes and branches)`,
      "remove remotes or branch sections you do not need ('git remote remove <name>'), or import with --from",
    );
  return config;
}

// What of the host's config the guest gets, by key (section.key or section.<sub>.key, lower-case
// names). Everything else stays home: credential.*, http.* (extraHeader tokens, cookie files,
// proxies), include/includeIf, url.*.insteadOf, core.sshCommand, core.hooksPath,
// core.fsmonitor, filter/diff/merge drivers, aliases, gpg and signing settings, ...
const KEEP_PLAIN = new Set([
  "core.repositoryformatversion",
  "core.filemode",
  "core.symlinks",
  "core.ignorecase",
  "core.precomposeunicode",
  "core.logallrefupdates",
  "core.autocrlf",
  "core.eol",
  "core.safecrlf",
  "extensions.objectformat",
  "extensions.refstorage",
  "extensions.partialclone",
  "user.name",
  "user.email",
]);
const KEEP_REMOTE = new Set([
  "url",
  "pushurl",
  "fetch",
  "push",
  "tagopt",
  "mirror",
  "prune",
  "promisor",
  "partialclonefilter",
]);
const KEEP_BRANCH = new Set(["remote", "pushremote", "merge", "rebase"]);

/** A remote URL without credentials: http(s)/ftp(s) lose their whole userinfo, others the password. */
export function stripUrlCredentials(url: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*@)?(.*)$/s.exec(url);
  if (!m || !m[2]) return url;
  const [, scheme, userinfo, rest] = m as unknown as [string, string, string, string];
  if (/^(https?|ftps?)$/i.test(scheme)) return `${scheme}://${rest}`;
  const user = userinfo.slice(0, -1).split(":")[0]!;
  return `${scheme}://${user ? `${user}@` : ""}${rest}`;
}

/**
 * The guest's .git/config from the host config's entries (`git config --list`): only what a
 * working clone needs (format and checkout settings, remotes' URLs without credentials and
 * refspecs, branch tracking, the committer's name and e-mail), as git config text.
 */
export function scrubGitConfig(entries: Array<{ key: string; value: string | null }>): string {
  const sections = new Map<string, string[]>();
  const add = (header: string, name: string, value: string | null) => {
    const lines = sections.get(header) ?? [];
    sections.set(header, lines);
    lines.push(value === null ? `\t${name}` : `\t${name} = ${quoteConfigValue(value)}`);
  };
  for (const { key, value } of entries) {
    const first = key.indexOf(".");
    const last = key.lastIndexOf(".");
    if (first < 0) continue;
    const section = key.slice(0, first).toLowerCase();
    const name = key.slice(last + 1).toLowerCase();
    if (!/^[a-z0-9-]+$/.test(section) || !/^[a-z][a-z0-9-]*$/.test(name)) continue;
    if (first === last) {
      if (KEEP_PLAIN.has(`${section}.${name}`)) add(`[${section}]`, name, value);
      continue;
    }
    const sub = key.slice(first + 1, last);
    if (/[\x00-\x1f\x7f]/.test(sub)) continue;
    const header = `[${section} "${sub.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"]`;
    if (section === "remote" && KEEP_REMOTE.has(name))
      add(header, name, value !== null && /url$/.test(name) ? stripUrlCredentials(value) : value);
    else if (section === "branch" && KEEP_BRANCH.has(name)) add(header, name, value);
  }
  return [...sections].map(([h, lines]) => `${h}\n${lines.join("\n")}\n`).join("");
}

/** A config value git reads back exactly: always quoted, with its escapes. */
function quoteConfigValue(value: string): string {
  const escaped = value
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"')
    .replace(/\n/g, "\\n")
    .replace(/\t/g, "\\t")
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
  return `"${escaped}"`;
}

/**
 * The real tar source: one GNU tar per part, run one after another, their
 * archives concatenated (the guest extracts them one by one). Names go to tar
 * NUL-separated and verbatim, so spaces, quotes, newlines and leading dashes are
 * just names; --no-recursion because the lists are complete.
 */
export const gnuTarSource: TarSourceFactory = (parts) => {
  const stream = new PassThrough();
  let current: ReturnType<typeof spawn> | null = null;
  let killed = false;
  const runPart = (part: TarPart) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(
        "tar",
        [
          "-c",
          "-f",
          "-",
          "-C",
          part.root,
          "--numeric-owner",
          "--owner=0",
          "--group=0",
          "--no-recursion",
          "--null",
          "--verbatim-files-from",
          "-T",
          "-",
        ],
        { stdio: ["pipe", "pipe", "pipe"] },
      );
      current = child;
      let stderr = "";
      child.stderr.on("data", (c: Buffer) => (stderr += c.toString("utf8")));
      child.stdout.pipe(stream, { end: false });
      child.stdin.on("error", () => {});
      child.stdin.end(part.names.map((n) => `${n}\0`).join(""));
      child.on("error", reject);
      child.on("close", (code, signal) => {
        current = null;
        if (code === 0) return resolve();
        const tail = stderr.trim().split("\n").slice(-5).join("\n");
        reject(
          new BangerError(
            ErrorCode.Internal,
            killed
              ? "the workspace import was stopped"
              : `tar ${signal ? `was killed by ${signal}` : `exited with status ${code}`} while reading ${part.root}${tail ? `:\n${tail}` : ""}`,
            killed ? undefined : "a file changed or vanished while it was read: run it again",
          ),
        );
      });
    });
  const done = (async () => {
    for (const part of parts) {
      if (killed) throw new BangerError(ErrorCode.Cancelled, "the workspace import was stopped");
      await runPart(part);
    }
    stream.end();
  })();
  done.catch(() => undefined);
  return {
    stream,
    done,
    kill() {
      killed = true;
      (current as ReturnType<typeof spawn> | null)?.kill("SIGKILL");
    },
  };
};

/**
 * Git in the guest, never running the repo's hooks or an fsmonitor the guest does not have.
 * The imported index carries the host's inodes and ctimes: comparing only mtime and size
 * (tar keeps both) spares re-hashing every file on the first `add -A` (1 s per 40 MiB under TCG).
 */
const GIT_FN =
  'g() { git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.checkStat=minimal -c core.trustctime=false "$@"; }';

function requireGit(): string {
  return `command -v git >/dev/null 2>&1 || { echo "banger: git is not installed in the guest" >&2; exit ${GuestStatus.NoGit}; }`;
}

/**
 * Builds a throwaway index at "$idx" (inside .git, as read-tree --index-output
 * needs) holding HEAD plus `git add -A` of the work tree: what the work tree holds,
 * minus ignored files. The real index is only read.
 */
const SNAPSHOT_FN = [
  "snapshot() {",
  '  g read-tree -m --index-output="$idx" HEAD 2>/dev/null ||',
  '    g read-tree --index-output="$idx" HEAD 2>/dev/null ||',
  '    g read-tree --index-output="$idx" --empty',
  '  GIT_INDEX_FILE="$idx" g add -A',
  "}",
].join("\n");

export interface PrepareScriptOptions {
  dir: string;
  /** The archives' guest destinations, in stream order. */
  dests: Array<TarPart["dest"]>;
  /** --from, resolved to a commit on the host. */
  from?: string | undefined;
  branch?: string | undefined;
  /** The guest's .git/config (scrubbedGitConfig); the host's own never travels. */
  gitConfig?: string;
}

/**
 * The guest side of prepare, fed the tar stream on stdin followed by the commit
 * marker. Extracts into a temp dir beside the workspaces, checks out --from /
 * --branch, records the base, then swaps the temp dir in; any failure before the
 * swap removes the temp dir and leaves the previous workspace as it was.
 * Prints `base <object>` last.
 */
export function prepareScript(opts: PrepareScriptOptions): string {
  const q = shellQuote;
  const lines = [
    "set -eu",
    requireGit(),
    GIT_FN,
    SNAPSHOT_FN,
    `dir=${q(opts.dir)}`,
    `state=${q(GUEST_STATE_DIR)}`,
    'mkdir -p "$state"',
    // The daemon's workspace lock ends when its ssh ends, but a cancelled import's script may
    // still run here: a lock in the guest keeps the next one from sweeping its temp dir.
    'if command -v flock >/dev/null 2>&1; then exec 9>"$state/workspace.lock"; flock 9; fi',
    // Left over by an import that was killed (none runs now: we hold the lock).
    'rm -rf "$state"/workspace-import.* "$state"/workspace-old.*',
    'tmp=$(mktemp -d "$state/workspace-import.XXXXXX")',
    'chmod 755 "$tmp"',
    "trap 'rm -rf \"$tmp\"' EXIT",
    'mkdir "$tmp/.git"',
    ...opts.dests.map((d) => `tar -x -f - --no-same-owner -C "$tmp"/${q(d)}`),
    // Only a complete stream ends with the marker: a killed or failed host tar never sends it.
    `tail=$(tail -c ${COMMIT_MARKER.length + 1} | tr -d '\\000')`,
    `[ "$tail" = ${q(COMMIT_MARKER)} ] || { echo "banger: the import stream ended early; the previous workspace is untouched" >&2; exit ${GuestStatus.Incomplete}; }`,
    'cd "$tmp"',
    `printf '%s' ${q(opts.gitConfig ?? "")} > .git/config`,
    // A submodule's or bare-backed worktree's config points elsewhere; here it is a plain repo.
    "git config --file .git/config --unset-all core.worktree 2>/dev/null || true",
    "git config --file .git/config core.bare false",
  ];
  if (opts.from && opts.branch) lines.push(`g checkout -q -f -B ${q(opts.branch)} ${q(opts.from)}`);
  else if (opts.from)
    lines.push(`g -c advice.detachedHead=false checkout -q -f --detach ${q(opts.from)}`);
  else if (opts.branch) lines.push(`g checkout -q -B ${q(opts.branch)}`);
  if (opts.from) {
    // Nothing of the work tree was sent: count what the checkout wrote.
    lines.push(`base=${q(opts.from)}`, "printf 'files %s\\n' \"$(g ls-files | wc -l)\"");
  } else {
    // The base is a tree of exactly what was imported; export diffs against it.
    lines.push(
      "idx=$(mktemp .git/banger-index.XXXXXX)",
      "snapshot",
      'base=$(GIT_INDEX_FILE="$idx" g write-tree)',
      'rm -f "$idx"',
    );
  }
  lines.push(
    "mkdir -p .git/banger",
    "printf '%s\\n' \"$base\" > .git/banger/base",
    "cd /",
    'old=""',
    'if [ -e "$dir" ] || [ -L "$dir" ]; then old=$(mktemp -d "$state/workspace-old.XXXXXX"); mv "$dir" "$old"/; fi',
    'mv "$tmp" "$dir"',
    "trap - EXIT",
    'printf \'%s\\n\' "$dir" > "$state/workspace.new"',
    `mv "$state/workspace.new" ${q(GUEST_WORKSPACE_RECORD)}`,
    '[ -z "$old" ] || rm -rf "$old"',
    "printf 'base %s\\n' \"$base\"",
  );
  return lines.join("\n");
}

/**
 * The guest side of export: prints the workspace dir and the base on two lines,
 * then a binary patch (or NUL-separated names) of everything in the work tree
 * past the base. Non-mutating: `git add -A` goes to a throwaway index, removed on
 * exit; the real index, work tree and refs are only read.
 */
export function exportScript(opts: { nameOnly: boolean }): string {
  return [
    "set -eu",
    requireGit(),
    GIT_FN,
    SNAPSHOT_FN,
    `record=${shellQuote(GUEST_WORKSPACE_RECORD)}`,
    `[ -f "$record" ] || { echo "banger: no workspace has been prepared in this VM" >&2; exit ${GuestStatus.NoWorkspace}; }`,
    // The CLI streams exports over its own SSH connection, outside the daemon's workspace lock:
    // the guest's own lock keeps an import from swapping the workspace away under it.
    `if command -v flock >/dev/null 2>&1; then exec 9>${shellQuote(`${GUEST_STATE_DIR}/workspace.lock`)} && flock 9; fi`,
    'dir=$(cat "$record")',
    `[ -f "$dir/.git/banger/base" ] || { echo "banger: the workspace $dir is gone" >&2; exit ${GuestStatus.NoWorkspace}; }`,
    'cd "$dir"',
    "base=$(cat .git/banger/base)",
    "idx=$(mktemp .git/banger/export-index.XXXXXX)",
    'trap \'rm -f "$idx" "$idx.lock"\' EXIT',
    "snapshot",
    'printf \'%s\\n%s\\n\' "$dir" "$base"',
    opts.nameOnly
      ? 'GIT_INDEX_FILE="$idx" g diff-index --cached --name-only -z "$base"'
      : 'GIT_INDEX_FILE="$idx" g diff-index --cached -p --binary "$base"',
  ].join("\n");
}

/** The end of a guest script's stderr, without its "banger: " prefixes, for an error message. */
export function guestStderrTail(stderr: string): string {
  return tailLines(stderr, 6)
    .split("\n")
    .map((l) => l.replace(/^banger: /, ""))
    .join("\n");
}

export function noGitError(vm: string): BangerError {
  return new BangerError(
    ErrorCode.Precondition,
    `git is not installed in VM ${vm}`,
    `use an image with git (the default debian-bookworm has it), or install it: 'banger vm ssh ${vm} -- apt-get install -y git' (needs --nat)`,
  );
}

/** What a failed export script run means (the daemon's and the CLI's streaming export share it). */
export function exportError(
  vm: string,
  r: { code: number | null; signal: string | null; stderr: string },
): BangerError {
  if (r.code === GuestStatus.NoGit) return noGitError(vm);
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

/** The remote command for a script: ssh hands one string to the login shell. */
export function shCommand(script: string): string {
  return `sh -c ${shellQuote(script)}`;
}
