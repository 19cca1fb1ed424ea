import fs from "node:fs/promises";
import path from "node:path";

/**
 * Live processes whose command line names a path under `dir` (a VM's or a test home's own
 * directory: QEMU, passt and banger's frame filter all name the VM directory), and whose
 * argv[0] passes `which`. Zombies have an empty command line and do not count.
 */
export async function processesNaming(
  dir: string,
  which: (argv0: string) => boolean = () => true,
): Promise<Array<{ pid: number; cmd: string }>> {
  const under = `${dir.replace(/\/$/, "")}/`;
  const found: Array<{ pid: number; cmd: string }> = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const argv = (await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => ""))
      .split("\0")
      .filter(Boolean);
    if (argv.length > 0 && which(argv[0]!) && argv.some((a) => a.includes(under)))
      found.push({ pid: Number(entry), cmd: argv.join(" ") });
  }
  return found.sort((a, b) => a.pid - b.pid);
}

/**
 * Pids of the VMMs (qemu-system-*, firecracker) whose command line names a path under `dir`:
 * a home, or one VM's directory. What a test asserts about its own VMs, never a host-wide
 * match on a VM name (another run, or the user's own banger, may have a VM of that name).
 */
export async function vmmPids(dir: string): Promise<number[]> {
  const vmms = await processesNaming(dir, (argv0) =>
    /^(qemu-system-|firecracker)/.test(path.basename(argv0)),
  );
  return vmms.map((p) => p.pid);
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

/** The parent pid of `pid`, from /proc (null when it is gone). */
export async function parentPid(pid: number): Promise<number | null> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
  if (!stat) return null;
  // After the command name (which may hold spaces and parentheses): state, ppid, ...
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

/** Taps by name, with the pids that hold them open (their /dev/net/tun fds). */
export async function tunHolders(): Promise<Map<string, number[]>> {
  const holders = new Map<string, number[]>();
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const fds = await fs.readdir(`/proc/${entry}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const target = await fs.readlink(`/proc/${entry}/fd/${fd}`).catch(() => "");
      if (target !== "/dev/net/tun") continue;
      const info = await fs.readFile(`/proc/${entry}/fdinfo/${fd}`, "utf8").catch(() => "");
      const iff = /^iff:\s+(\S+)/m.exec(info)?.[1];
      if (iff) holders.set(iff, [...(holders.get(iff) ?? []), Number(entry)]);
    }
  }
  return holders;
}
