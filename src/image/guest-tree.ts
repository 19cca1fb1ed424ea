import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { S_IFDIR, type EntryTable } from "../disk/entry-meta.js";

/**
 * Paths inside a flattened image tree during finalisation. The image is untrusted: its
 * symlinks (say etc/ssh -> /usr/share/ssh) must never make banger read or write the host's path.
 */

/**
 * Every component of `rel`'s parent must be a real directory in the tree; missing ones are
 * made (root-owned, 0755).
 */
export async function prepareParent(tree: string, rel: string, entries: EntryTable): Promise<void> {
  const parts = path.posix
    .dirname(rel)
    .split("/")
    .filter((p) => p !== ".");
  let current = "";
  for (const part of parts) {
    current = current ? `${current}/${part}` : part;
    const abs = path.join(tree, current);
    const stat = await fsp.lstat(abs).catch(() => null);
    if (stat?.isDirectory()) continue;
    if (stat) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `cannot add banger's files: /${current} in the image is not a directory`,
      );
    }
    await fsp.mkdir(abs, { mode: 0o755 });
    entries.set(current, { uid: 0, gid: 0, mode: S_IFDIR | 0o755 });
  }
}

/** At most this many symlinks on one path, as the kernel's limit. */
const MAX_HOPS = 40;

/**
 * What an absolute path names inside the tree, following the image's symlinks the way the guest
 * will (absolute targets from the tree's root, `..` never above it), one component at a time so
 * only real directories of the tree are ever walked through. Null when it does not resolve.
 */
export async function resolveInTree(
  tree: string,
  guestPath: string,
): Promise<{ rel: string; stat: import("node:fs").Stats } | null> {
  const pending = guestPath.split("/").filter((p) => p !== "" && p !== ".");
  const done: string[] = [];
  let hops = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === "..") {
      done.pop();
      continue;
    }
    const rel = [...done, part].join("/");
    const stat = await fsp.lstat(path.join(tree, rel)).catch(() => null);
    if (!stat) return null;
    if (stat.isSymbolicLink()) {
      if (++hops > MAX_HOPS) return null;
      const target = await fsp.readlink(path.join(tree, rel));
      if (target.startsWith("/")) done.length = 0;
      pending.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
      continue;
    }
    if (pending.length === 0) return { rel, stat };
    if (!stat.isDirectory()) return null;
    done.push(part);
  }
  return null;
}

/** The most banger reads of one of the image's small config files (fstab, passwd, sshd_config, ...). */
export const MAX_TREE_TEXT_BYTES = 1024 * 1024;

/**
 * The text of a small regular file of the tree (each parent checked to be a real directory
 * first), or null when it or a parent is absent. A file that is not regular, or larger than
 * MAX_TREE_TEXT_BYTES (the daemon would hold it whole), is refused with `purpose` in the error.
 */
export async function readTreeText(
  tree: string,
  rel: string,
  purpose: string,
): Promise<string | null> {
  const parts = rel.split("/");
  for (let i = 1; i < parts.length; i++) {
    const parent = parts.slice(0, i).join("/");
    const stat = await fsp.lstat(path.join(tree, parent)).catch(() => null);
    if (!stat) return null;
    if (!stat.isDirectory())
      throw new BangerError(
        ErrorCode.InvalidParams,
        `cannot ${purpose}: /${parent} in the image is not a directory`,
      );
  }
  const abs = path.join(tree, rel);
  const stat = await fsp.lstat(abs).catch(() => null);
  if (!stat) return null;
  if (!stat.isFile())
    throw new BangerError(
      ErrorCode.InvalidParams,
      `cannot ${purpose}: /${rel} in the image is not a regular file`,
    );
  if (stat.size > MAX_TREE_TEXT_BYTES)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `cannot ${purpose}: /${rel} in the image is larger than ${MAX_TREE_TEXT_BYTES / 1024} KiB`,
    );
  return fsp.readFile(abs, "utf8");
}

/** Replaces a regular file of the tree with new content by rename (a hardlinked name keeps the old text). */
export async function rewriteTreeFile(tree: string, rel: string, content: string): Promise<void> {
  // Written beside the tree (same filesystem, a name no image entry can take), then renamed in.
  const tmp = path.join(path.dirname(tree), `rewrite-${randomBytes(6).toString("hex")}`);
  await fsp.writeFile(tmp, content, { mode: 0o644, flag: "wx" });
  await fsp.rename(tmp, path.join(tree, rel));
}
