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
