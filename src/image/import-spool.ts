import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";

/**
 * The files `banger image import -` saves stdin to (`<state>/imports/`), named after the CLI
 * that writes them: its pid and its start time, which together name one process for good (a
 * pid alone may be reused). A CLI killed outright (SIGKILL) cannot remove its file; whoever
 * sweeps (the daemon at start, every CLI before it spools) removes the files whose process is
 * gone, and never one whose CLI still runs.
 */

const SPOOL_NAME = /^stdin-([1-9][0-9]*)-([0-9]+)-[0-9a-f]{12}\.tar$/;

/**
 * When `pid` started (ticks since boot: field 22 of /proc/<pid>/stat), or null when there is
 * no such process.
 */
export type ProcessStartTime = (pid: number) => Promise<string | null>;

export const procStartTime: ProcessStartTime = async (pid) => {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, "utf8").catch(() => null);
  if (stat === null) return null;
  // The command name (field 2) is in parentheses and may hold spaces or ')': fields 3 on
  // follow the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return fields[22 - 3] ?? null;
};

/** A new spool file's path for this process (created by the caller with `wx`). */
export async function spoolPath(
  importsDir: string,
  startTime: ProcessStartTime = procStartTime,
): Promise<string> {
  const started = (await startTime(process.pid)) ?? "0";
  return path.join(
    importsDir,
    `stdin-${process.pid}-${started}-${randomBytes(6).toString("hex")}.tar`,
  );
}

/**
 * Removes the spool files under `importsDir` whose CLI is gone; returns their paths. Only
 * regular files with a spool's name; nothing when this process cannot see its own start time
 * (no /proc: it could not tell a live CLI from a dead one either).
 */
export async function sweepImportSpools(
  importsDir: string,
  startTime: ProcessStartTime = procStartTime,
): Promise<string[]> {
  if ((await startTime(process.pid)) === null) return [];
  const removed: string[] = [];
  for (const name of await fsp.readdir(importsDir).catch(() => [] as string[])) {
    const m = SPOOL_NAME.exec(name);
    if (!m) continue;
    const file = path.join(importsDir, name);
    const stat = await fsp.lstat(file).catch(() => null);
    if (!stat?.isFile()) continue;
    if ((await startTime(Number(m[1]))) === m[2]) continue;
    await fsp.rm(file, { force: true });
    removed.push(file);
  }
  return removed;
}
