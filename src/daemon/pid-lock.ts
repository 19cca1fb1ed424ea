import fs from "node:fs/promises";
import { BangerError, ErrorCode } from "../api/errors.js";

export interface LockDeps {
  /** Is `pid` a live bangerd (so its lock is real, not left by a crash)? */
  isDaemonAlive(pid: number): Promise<boolean>;
}

export interface PidLock {
  readonly file: string;
  release(): Promise<void>;
}

/** True when pid runs and is this process or a process whose command line names bangerd. */
export async function isLiveDaemonPid(pid: number): Promise<boolean> {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  try {
    const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, "utf8");
    return cmdline.includes("bangerd");
  } catch {
    return false;
  }
}

export const defaultLockDeps: LockDeps = { isDaemonAlive: isLiveDaemonPid };

/**
 * Single-instance lock: an O_EXCL file holding our pid. A lock whose pid is no
 * longer a bangerd (crash, kill -9, pid reuse) is stale and replaced.
 */
export async function acquirePidLock(
  file: string,
  deps: LockDeps = defaultLockDeps,
  busy: (owner: number) => BangerError = (owner) =>
    new BangerError(
      ErrorCode.Busy,
      `another bangerd is already running (pid ${owner})`,
      "use 'banger daemon status' to inspect it or 'banger daemon stop' to stop it",
    ),
): Promise<PidLock> {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const handle = await fs.open(file, "wx", 0o600);
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      let released = false;
      return {
        file,
        async release() {
          if (released) return;
          released = true;
          // Only remove the lock if it is still ours.
          const owner = await readPid(file);
          if (owner === process.pid) await fs.rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = await readPid(file);
    if (owner !== null && (await deps.isDaemonAlive(owner))) throw busy(owner);
    await fs.rm(file, { force: true });
  }
  throw new BangerError(
    ErrorCode.Busy,
    `could not take the daemon lock ${file}`,
    "another bangerd is starting; try again",
  );
}

async function readPid(file: string): Promise<number | null> {
  try {
    const text = await fs.readFile(file, "utf8");
    const pid = Number.parseInt(text.trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : null;
  } catch {
    return null;
  }
}
