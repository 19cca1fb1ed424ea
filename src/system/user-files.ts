import fs from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { CommandRunner } from "./runner.js";

/** What is at a path: nothing, a regular file (with its content), or something else (symlink, dir, fifo). */
export type UserFileState =
  { kind: "none" } | { kind: "file"; content: string } | { kind: "other" };

/**
 * File steps inside a user's home, done as that user. Root must never create, chown, rename or
 * remove there: the user owns the directories and can swap a path for a symlink mid-way.
 */
export interface UserFiles {
  /** mkdir -p, mode 0755. */
  mkdirs(dir: string): Promise<void>;
  read(file: string): Promise<UserFileState>;
  /** A temp file next to `file`, renamed over it: never a half-written file. Mode 0644. */
  write(file: string, content: string): Promise<void>;
  /** Removes the file or symlink; absent is fine. */
  remove(file: string): Promise<void>;
  /** A symlink's target, or null when `link` is not a symlink. */
  readlink(link: string): Promise<string | null>;
}

export interface UserIds {
  name: string;
  uid: number;
  gid: number;
}

const USER_STEP_TIMEOUT_MS = 30_000;

const VERBS = {
  mkdirs: "create",
  read: "read",
  write: "write",
  remove: "remove",
  readlink: "read the link",
} as const;

// Scripts take their paths as positional arguments ("$1"...) and content on stdin: nothing the user
// controls is ever interpolated into them.
const SCRIPTS = {
  mkdirs: 'umask 022 && mkdir -p -- "$1"',
  read: [
    'if [ -L "$1" ]; then echo other; exit 0; fi',
    'if [ ! -e "$1" ]; then echo none; exit 0; fi',
    'if [ ! -f "$1" ]; then echo other; exit 0; fi',
    'echo file && exec cat -- "$1"',
  ].join("\n"),
  // noclobber: the temp file is created, never opened through something already there.
  write: [
    "umask 022",
    "trap 'rm -f -- \"$2\"' EXIT",
    'set -C && cat > "$2" && chmod 0644 -- "$2" && mv -fT -- "$2" "$1"',
  ].join("\n"),
  remove: 'rm -f -- "$1"',
  readlink: 'if [ -L "$1" ]; then readlink -- "$1"; fi',
} as const;

/**
 * UserFiles that run each step in `sh` as the user: through `setpriv` when we are root, directly
 * when we already are that user.
 */
export function userFilesVia(runner: CommandRunner, euid: number, user: UserIds): UserFiles {
  const run = async (
    step: keyof typeof SCRIPTS,
    args: string[],
    input?: string,
  ): Promise<string> => {
    const sh = ["sh", "-c", SCRIPTS[step], "sh", ...args];
    const [cmd, ...cmdArgs] =
      euid === user.uid
        ? sh
        : ["setpriv", `--reuid=${user.uid}`, `--regid=${user.gid}`, "--init-groups", "--", ...sh];
    const r = await runner.run(cmd!, cmdArgs, {
      input: input ?? "",
      timeoutMs: USER_STEP_TIMEOUT_MS,
    });
    if (r.code === 0) return r.stdout;
    throw new BangerError(
      ErrorCode.Precondition,
      `could not ${VERBS[step]} ${args[0]} as ${user.name}: ${r.stderr.trim() || `status ${r.code ?? r.signal}`}`,
      `${user.name} must be able to write there: fix the ownership of that directory (it is in their home), then run the install again`,
    );
  };
  return {
    async mkdirs(dir) {
      await run("mkdirs", [dir]);
    },
    async read(file) {
      const out = await run("read", [file]);
      const newline = out.indexOf("\n");
      const kind = newline < 0 ? out : out.slice(0, newline);
      if (kind === "none") return { kind: "none" };
      if (kind === "file") return { kind: "file", content: out.slice(newline + 1) };
      return { kind: "other" };
    },
    async write(file, content) {
      const tmp = path.join(path.dirname(file), `.${path.basename(file)}.banger-${process.pid}`);
      await run("write", [file, tmp], content);
    },
    async remove(file) {
      await run("remove", [file]);
    },
    async readlink(link) {
      const out = await run("readlink", [link]);
      return out === "" ? null : out.replace(/\n$/, "");
    },
  };
}

/** The same steps done directly by this process: for root's own /etc/systemd/system, and tests. */
export const directFiles: UserFiles = {
  async mkdirs(dir) {
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  },
  async read(file) {
    const st = await fs.lstat(file).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return null;
      throw err;
    });
    if (!st) return { kind: "none" };
    if (!st.isFile()) return { kind: "other" };
    return { kind: "file", content: await fs.readFile(file, "utf8") };
  },
  async write(file, content) {
    const tmp = path.join(path.dirname(file), `.${path.basename(file)}.banger-${process.pid}`);
    try {
      await fs.writeFile(tmp, content, { mode: 0o644, flag: "wx" });
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
  },
  async remove(file) {
    await fs.rm(file, { force: true });
  },
  async readlink(link) {
    const st = await fs.lstat(link).catch(() => null);
    return st?.isSymbolicLink() ? fs.readlink(link) : null;
  },
};
