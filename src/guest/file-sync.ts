import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { FileSyncEntry } from "../config/config.js";
import { S_IFDIR, S_IFREG, type EntryMeta } from "../disk/entry-meta.js";

const S_IFLNK = 0o120000;

/** What a `[[file_sync]]` entry became on the work disk. */
export interface SyncedPath {
  /** Path under /root in the guest, e.g. `.gitconfig`. */
  guest: string;
  kind: "file" | "dir";
  files: number;
}

export interface FileSyncResult {
  synced: SyncedPath[];
  /** Entries skipped because their host path does not exist: warnings, not errors. */
  warnings: string[];
}

/** `~/x` or `/root/x` → `x`, the path under the work disk's root. */
export function guestRelative(guest: string): string {
  const rel = guest.startsWith("~/") ? guest.slice(2) : guest.slice("/root/".length);
  const norm = path.posix.normalize(rel).replace(/\/+$/, "");
  if (norm === "" || norm === "." || norm.startsWith("../") || norm === "..") {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `file_sync guest path "${guest}" does not name a file under /root`,
      'use a path such as "~/.gitconfig" or "/root/.config/gh"',
    );
  }
  if (norm === ".ssh/authorized_keys" || norm === ".ssh") {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `file_sync guest path "${guest}" would replace banger's SSH key`,
      "sync single files into ~/.ssh instead (e.g. ~/.ssh/config)",
    );
  }
  return norm;
}

function expandHost(host: string, homeDir: string): string {
  return host.startsWith("~/") ? path.join(homeDir, host.slice(2)) : host;
}

/** debugfs takes quoted paths: a double quote or control character cannot be written safely. */
function checkName(rel: string, host: string): void {
  // eslint-disable-next-line no-control-regex
  if (/["\x00-\x1f\x7f]/.test(rel)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `file_sync cannot copy "${host}": the name has a control character or a double quote`,
      "rename it, or remove the entry from [[file_sync]] in the config",
    );
  }
}

/**
 * Copies the config's `[[file_sync]]` entries into the work disk's staging dir
 * (the future /root) and records the owner and mode each path must get: files
 * root-owned with the entry's mode (default 0600); directories copied
 * recursively, each file keeping its own mode. A missing host path is a warning;
 * anything else unreadable is an error (the caller aborts the create).
 */
export async function stageFileSync(opts: {
  entries: FileSyncEntry[];
  staging: string;
  homeDir: string;
  meta: Map<string, EntryMeta>;
}): Promise<FileSyncResult> {
  const result: FileSyncResult = { synced: [], warnings: [] };
  for (const entry of opts.entries) {
    const rel = guestRelative(entry.guest);
    const host = expandHost(entry.host, opts.homeDir);
    // The top-level path is followed: dotfiles are often symlinks into a dotfiles repo.
    const st = await fsp.stat(host).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return null;
      throw new BangerError(
        ErrorCode.InvalidParams,
        `file_sync cannot read "${entry.host}": ${err.message}`,
        "fix its permissions, or remove the entry from [[file_sync]] in the config",
      );
    });
    if (!st) {
      result.warnings.push(`file_sync: ${entry.host} does not exist on this host; skipped`);
      continue;
    }
    checkName(rel, entry.host);
    await makeParents(opts.staging, rel, opts.meta);
    const target = path.join(opts.staging, rel);
    if (st.isDirectory()) {
      await fsp.rm(target, { recursive: true, force: true });
      const files = await copyTree(host, target, rel, opts.meta, entry.host);
      opts.meta.set(rel, { uid: 0, gid: 0, mode: S_IFDIR | (entry.mode ?? st.mode & 0o7777) });
      result.synced.push({ guest: rel, kind: "dir", files });
    } else if (st.isFile()) {
      await fsp.rm(target, { recursive: true, force: true });
      await fsp.copyFile(host, target);
      opts.meta.set(rel, { uid: 0, gid: 0, mode: S_IFREG | (entry.mode ?? 0o600) });
      result.synced.push({ guest: rel, kind: "file", files: 1 });
    } else {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `file_sync cannot copy "${entry.host}": it is neither a file nor a directory`,
        "point the entry at a regular file or a directory",
      );
    }
  }
  return result;
}

/** Parent dirs the config did not name: root-owned 0755, like a fresh home's subdirectories. */
async function makeParents(
  staging: string,
  rel: string,
  meta: Map<string, EntryMeta>,
): Promise<void> {
  const parts = rel.split("/").slice(0, -1);
  for (let i = 1; i <= parts.length; i++) {
    const dir = parts.slice(0, i).join("/");
    const full = path.join(staging, dir);
    const have = await fsp.lstat(full).catch(() => null);
    if (have && !have.isDirectory()) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `file_sync: /root/${dir} is both a file and a directory in [[file_sync]]`,
        "fix the guest paths in the config",
      );
    }
    if (!have) {
      await fsp.mkdir(full, { mode: 0o700 });
      meta.set(dir, { uid: 0, gid: 0, mode: S_IFDIR | 0o755 });
    }
  }
}

/** Recursive copy keeping each entry's mode and symlinks as symlinks; sockets and devices are skipped. */
async function copyTree(
  from: string,
  to: string,
  rel: string,
  meta: Map<string, EntryMeta>,
  label: string,
): Promise<number> {
  await fsp.mkdir(to, { mode: 0o700 });
  let files = 0;
  for (const dirent of await fsp.readdir(from, { withFileTypes: true })) {
    const src = path.join(from, dirent.name);
    const dst = path.join(to, dirent.name);
    const childRel = `${rel}/${dirent.name}`;
    checkName(childRel, `${label}/${dirent.name}`);
    const st = await fsp.lstat(src);
    if (st.isDirectory()) {
      files += await copyTree(src, dst, childRel, meta, `${label}/${dirent.name}`);
      meta.set(childRel, { uid: 0, gid: 0, mode: S_IFDIR | (st.mode & 0o7777) });
    } else if (st.isFile()) {
      await fsp.copyFile(src, dst);
      meta.set(childRel, { uid: 0, gid: 0, mode: S_IFREG | (st.mode & 0o7777) });
      files++;
    } else if (st.isSymbolicLink()) {
      await fsp.symlink(await fsp.readlink(src), dst);
      meta.set(childRel, { uid: 0, gid: 0, mode: S_IFLNK | 0o777 });
      files++;
    }
  }
  return files;
}
