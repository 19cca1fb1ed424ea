import fs from "node:fs/promises";
import path from "node:path";

/**
 * Why root should not run code from `target`, or null when it may: the path with symlinks
 * resolved, and every directory above it up to /, must be owned by root and writable by no one
 * else. So must the directory holding `target` itself, in case `target` is a symlink someone
 * could re-point. A root-owned sticky directory such as /tmp is allowed as a parent: others
 * cannot rename or remove what root owns inside it.
 */
export async function whyNotRootOwned(target: string): Promise<string | null> {
  for (const [p, isParent] of [
    [target, false],
    [path.dirname(target), true],
  ] as const) {
    const why = await chainProblem(p, target, isParent);
    if (why) return why;
  }
  return null;
}

async function chainProblem(
  start: string,
  target: string,
  startIsParent: boolean,
): Promise<string | null> {
  let real: string;
  try {
    real = await fs.realpath(start);
  } catch (err) {
    return `${start} cannot be resolved: ${(err as NodeJS.ErrnoException).code ?? String(err)}`;
  }
  let current = real;
  for (;;) {
    const st = await fs.lstat(current);
    const shown = current === target ? current : `${current} (above ${target})`;
    if (st.uid !== 0) return `${shown} is owned by uid ${st.uid}, not root`;
    // Only as a parent: the root-owned entry below it was checked already.
    const stickyShelter =
      st.isDirectory() && (st.mode & 0o1000) !== 0 && (startIsParent || current !== real);
    if (st.mode & 0o022 && !stickyShelter) {
      const who = [st.mode & 0o020 ? "its group" : "", st.mode & 0o002 ? "others" : ""];
      const mode = (st.mode & 0o7777).toString(8);
      return `${shown} is writable by ${who.filter(Boolean).join(" and ")} (mode ${mode})`;
    }
    const parent = path.dirname(current);
    if (parent === current) return null;
    current = parent;
  }
}
