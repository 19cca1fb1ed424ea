import fsp from "node:fs/promises";
import path from "node:path";
import type { ImageConfig } from "../api/methods.js";
import { S_IFREG, type EntryTable } from "../disk/entry-meta.js";
import { IMAGE_ENV_FILE, IMAGE_ENV_PROFILE, IMAGE_WORKDIR_FILE } from "../guest/image-env.js";
import type { GuestScripts } from "../guest/scripts.js";
import { removeTree } from "../util/remove-tree.js";
import { prepareParent, resolveInTree, rewriteTreeFile } from "./guest-tree.js";

const SYSTEM_PROFILE = "etc/profile";

/**
 * Writes the image's Env and WorkingDir into the tree as data for image-env.sh (guest/image-env.ts).
 * The config was validated when it was read (image-config.ts): keys are shell names, no value
 * holds a newline, the WorkingDir is absolute, so every entry is one line. A WorkingDir the
 * image lacks is made (root-owned, 0755), as container runtimes do, unless its path runs
 * through something that is not a directory. guest-scripts/image-profile.sh goes to
 * /etc/profile.d for login shells, and an image without /etc/profile (busybox, scratch
 * images) gets profile.sh there, so its login shell reads profile.d at all. Nothing is written
 * for an image that sets neither.
 */
export async function writeImageEnv(
  tree: string,
  entries: EntryTable,
  config: ImageConfig | null,
  scripts: Pick<GuestScripts, "imageProfile" | "minimalProfile">,
): Promise<void> {
  if (config === null || (config.env.length === 0 && config.workingDir === null)) return;
  const files: Array<[string, string]> = [[IMAGE_ENV_PROFILE, scripts.imageProfile]];
  await prepareParent(tree, IMAGE_ENV_PROFILE, entries);
  // Anything already there (a symlink too) is the image's own profile and is kept.
  if (!(await fsp.lstat(path.join(tree, SYSTEM_PROFILE)).catch(() => null)))
    files.push([SYSTEM_PROFILE, scripts.minimalProfile]);
  if (config.env.length > 0) files.push([IMAGE_ENV_FILE, config.env.map((e) => `${e}\n`).join("")]);
  if (config.workingDir !== null) {
    files.push([IMAGE_WORKDIR_FILE, `${config.workingDir}\n`]);
    if (!(await resolveInTree(tree, config.workingDir))) {
      const rel = path.posix.normalize(config.workingDir).replace(/^\/+/, "");
      if (rel !== "") await prepareParent(tree, `${rel}/-`, entries).catch(() => {});
    }
  }
  for (const [rel, content] of files) {
    await prepareParent(tree, rel, entries);
    const abs = path.join(tree, rel);
    const existing = await fsp.lstat(abs).catch(() => null);
    if (existing?.isDirectory()) await removeTree(abs);
    await rewriteTreeFile(tree, rel, content);
    entries.set(rel, { uid: 0, gid: 0, mode: S_IFREG | 0o644 });
  }
}
