import fs from "node:fs/promises";

/**
 * Live processes whose command line contains `mark` (a VM's or a test home's own directory:
 * QEMU, passt and banger's frame filter all name the VM directory). Zombies have an empty
 * command line and do not count.
 */
export async function processesNaming(mark: string): Promise<Array<{ pid: number; cmd: string }>> {
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes(mark))
      found.push({ pid: Number(entry), cmd: cmdline.replace(/\0/g, " ") });
  }
  return found;
}

/** SIGKILLs every process naming `mark` and waits (bounded) until none is left. */
export async function killProcessesNaming(mark: string): Promise<void> {
  for (const { pid } of await processesNaming(mark)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  await untilNoneNaming(mark, 10_000);
}

/** Waits, bounded, until no live process names `mark`; returns what is still there. */
export async function untilNoneNaming(
  mark: string,
  timeoutMs: number,
): Promise<Array<{ pid: number; cmd: string }>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = await processesNaming(mark);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}
