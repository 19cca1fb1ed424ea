// The staging tree a layer is applied into: every path touched has each parent lstat'ed as a
// real directory first, so nothing a layer says makes banger follow a symlink out of it.
import fsp from "node:fs/promises";
import path from "node:path";
import type { EntryDb } from "../../disk/entries.js";
import { S_IFDIR } from "../../disk/entry-meta.js";
import { removeTree as removeFlat } from "../../util/remove-tree.js";
import { layerError } from "./layer-path.js";

/** realDirs is a cache: past this many paths it starts again, so it never grows with the image. */
const REAL_DIRS_CACHE = 4096;

/** What to do when a path to remove lies under a symlink. */
export type UnderSymlink = "refuse" | "skip";

// Directories known to be real (not symlinks) in the tree: saves an lstat per path component.
// Bounded: a cache, cleared whenever a tree is removed or it grows past REAL_DIRS_CACHE.
const realDirsOf = new WeakMap<EntryDb, Set<string>>();
function realDirs(entries: EntryDb): Set<string> {
  let set = realDirsOf.get(entries);
  if (!set || set.size > REAL_DIRS_CACHE) {
    set = new Set();
    realDirsOf.set(entries, set);
  }
  return set;
}

/**
 * Is every component of `dir` (relative; "" is the root) a real directory? "missing" when
 * one is absent or not a directory (nothing is there to touch); a symlink refuses, or with
 * "skip" reports "symlink".
 */
export async function checkDir(
  root: string,
  entries: EntryDb,
  dir: string,
  member: string,
  what: string,
  onSymlink: UnderSymlink,
): Promise<"ok" | "missing" | "symlink"> {
  if (dir === "") return "ok";
  const known = realDirs(entries);
  if (known.has(dir)) return "ok";
  let current = "";
  for (const part of dir.split("/")) {
    current = current ? `${current}/${part}` : part;
    if (known.has(current)) continue;
    const stat = await fsp.lstat(path.join(root, current)).catch(() => null);
    if (stat?.isSymbolicLink()) {
      if (onSymlink === "skip") return "symlink";
      throw layerError(member, `${what} through the symlink ${current} is refused`);
    }
    if (!stat?.isDirectory()) return "missing";
    known.add(current);
  }
  return "ok";
}

/** Removes `rel` (a symlink itself, never its target) and everything under it, if it is in the tree. */
export async function removeTree(
  root: string,
  entries: EntryDb,
  rel: string,
  member: string,
  onSymlink: UnderSymlink = "refuse",
): Promise<void> {
  const parent = path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel);
  if ((await checkDir(root, entries, parent, member, "removing", onSymlink)) !== "ok") return;
  // rm never follows a symlink it meets, the last component included.
  await removeFlat(path.join(root, rel));
  entries.deleteTree(rel);
  realDirsOf.delete(entries);
}

/** Parent directories must be real directories inside the tree, never symlinks; missing ones are made. */
export async function ensureParent(root: string, entries: EntryDb, rel: string): Promise<void> {
  const parent = path.posix.dirname(rel);
  const known = realDirs(entries);
  if (parent === "." || known.has(parent)) return;
  let current = "";
  for (const part of parent.split("/")) {
    current = current ? `${current}/${part}` : part;
    if (known.has(current)) continue;
    const abs = path.join(root, current);
    const stat = await fsp.lstat(abs).catch(() => null);
    if (stat?.isSymbolicLink())
      throw layerError(rel, `its parent ${current} is a symlink; writing through it is refused`);
    if (!stat?.isDirectory()) {
      if (stat) await removeTree(root, entries, current, rel);
      await fsp.mkdir(abs, { mode: 0o755 });
      if (!entries.has(current)) entries.set(current, { uid: 0, gid: 0, mode: S_IFDIR | 0o755 });
    }
    realDirs(entries).add(current);
  }
}
