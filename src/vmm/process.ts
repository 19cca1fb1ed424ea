import fsp from "node:fs/promises";
import type { VmHandles } from "./driver.js";

export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Waits, bounded, for a process to exit; true when it did. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isPidAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !isPidAlive(pid);
}

/**
 * Is the VMM the handles describe still running? A recycled pid is not our VM:
 * the process must be the VMM binary and name our control socket.
 */
export async function vmmStatus(
  handles: VmHandles,
  binaryMarker: string,
): Promise<"running" | "stopped"> {
  if (!isPidAlive(handles.pid)) return "stopped";
  const cmdline = await fsp.readFile(`/proc/${handles.pid}/cmdline`, "utf8").catch(() => "");
  return cmdline.includes(binaryMarker) && cmdline.includes(handles.controlSocket)
    ? "running"
    : "stopped";
}

/** SIGKILL the VMM (if it is still ours) and wait for it to go. */
export async function killVmm(handles: VmHandles, binaryMarker: string): Promise<void> {
  if ((await vmmStatus(handles, binaryMarker)) === "stopped") return;
  try {
    process.kill(handles.pid, "SIGKILL");
  } catch {
    // already gone
  }
  await waitForExit(handles.pid, 10_000);
}

/** A VMM's resident memory and CPU time, from /proc (null where it cannot be read). */
export async function processUsage(
  pid: number,
): Promise<{ rssBytes: number | null; cpuSeconds: number | null }> {
  const status = await fsp.readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
  const stat = await fsp.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  // Fields after the ")" of the command name: utime and stime are the 12th and 13th (clock ticks, 100/s on Linux).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return {
    rssBytes: rss ? Number(rss[1]) * 1024 : null,
    cpuSeconds: fields.length > 13 ? (Number(fields[11]) + Number(fields[12])) / 100 : null,
  };
}
