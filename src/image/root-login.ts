import { S_IFREG, type EntryTable } from "../disk/entry-meta.js";
import { TOOLKIT_SHELL } from "../guest/toolkit.js";
import { prepareParent, readTreeText, resolveInTree, rewriteTreeFile } from "./guest-tree.js";

/** What finalisation did to root's login so `vm ssh` and `vm run` always get a shell. */
export type RootLogin =
  /** The image's root entry and shell are used as they are. */
  | "kept"
  /** No /etc/passwd: banger wrote one holding only root, with banger's shell. */
  | "passwd-written"
  /** /etc/passwd had no root: banger added it, with banger's shell. */
  | "root-added"
  /** root's shell is not in the image (distroless's /sbin/nologin, a bash that is absent): banger's. */
  | "shell-replaced";

export const ROOT_ENTRY = `root:x:0:0:root:/root:${TOOLKIT_SHELL}`;

const readRegular = (tree: string, rel: string) => readTreeText(tree, rel, "set up root's login");

function lines(text: string): string[] {
  return text === "" ? [] : text.replace(/\n$/, "").split("\n");
}

async function write(tree: string, rel: string, entries: EntryTable, content: string) {
  await prepareParent(tree, rel, entries);
  await rewriteTreeFile(tree, rel, content);
  if (!entries.has(rel)) entries.set(rel, { uid: 0, gid: 0, mode: S_IFREG | 0o644 });
}

/**
 * root gets a passwd entry and a login shell that exists in the image (banger's busybox sh
 * otherwise), listed in /etc/shells: dropbear refuses a user whose shell is not there, and
 * without the file glibc allows only /bin/sh and /bin/csh.
 */
export async function ensureRootLogin(tree: string, entries: EntryTable): Promise<RootLogin> {
  const passwd = await readRegular(tree, "etc/passwd");
  let change: RootLogin = "kept";
  let shell = TOOLKIT_SHELL;
  if (passwd === null) {
    await write(tree, "etc/passwd", entries, `${ROOT_ENTRY}\n`);
    change = "passwd-written";
    if ((await readRegular(tree, "etc/group")) === null)
      await write(tree, "etc/group", entries, "root:x:0:\n");
  } else {
    const all = lines(passwd);
    const at = all.findIndex((l) => l.split(":")[0] === "root");
    if (at < 0) {
      await write(tree, "etc/passwd", entries, [...all, ROOT_ENTRY, ""].join("\n"));
      change = "root-added";
    } else {
      const fields = all[at]!.split(":");
      // passwd(5): an empty shell field means /bin/sh.
      const own = fields[6] || "/bin/sh";
      const found = own.startsWith("/") ? await resolveInTree(tree, own) : null;
      if (found?.stat.isFile() && (found.stat.mode & 0o111) !== 0) {
        shell = own;
      } else {
        while (fields.length < 7) fields.push("");
        fields[6] = TOOLKIT_SHELL;
        all[at] = fields.join(":");
        await write(tree, "etc/passwd", entries, [...all, ""].join("\n"));
        change = "shell-replaced";
      }
    }
  }
  const shells = await readRegular(tree, "etc/shells");
  if (shells === null) await write(tree, "etc/shells", entries, `${shell}\n`);
  else if (!lines(shells).includes(shell))
    await write(tree, "etc/shells", entries, [...lines(shells), shell, ""].join("\n"));
  return change;
}
