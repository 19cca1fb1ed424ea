import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface BridgeTap {
  name: string;
  /** No process holds the tap open (the kernel shows NO-CARRIER): a pool tap, or a leaked one. */
  idle: boolean;
}

/** banger's taps (`bg-`) on `bridge`. */
export async function bridgeTaps(bridge: string): Promise<BridgeTap[]> {
  const r = await run("ip", ["-o", "link", "show", "master", bridge]).catch(() => ({
    stdout: "",
  }));
  return r.stdout.split("\n").flatMap((line) => {
    const name = /^\d+: (bg-[^:@\s]+)[@:]/.exec(line)?.[1];
    return name ? [{ name, idle: line.includes("NO-CARRIER") }] : [];
  });
}

/**
 * Every banger tap on `bridge` is accounted for: the taps in use are exactly the running VMs'
 * (`inUse`), and the idle ones are no more than the pool keeps. A tap whose QEMU is gone shows
 * as idle, so it is caught once the pool is full. Waits up to `ms` (the pool refills in the
 * background and may hold one extra tap for a moment), then fails with what is on the bridge.
 */
export async function assertTapsAccountedFor(
  bridge: string,
  inUse: string[],
  pool: number,
  what: string,
  ms = 30_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const taps = await bridgeTaps(bridge);
    const busy = taps
      .filter((t) => !t.idle)
      .map((t) => t.name)
      .sort();
    const idle = taps.filter((t) => t.idle).map((t) => t.name);
    const okNow = busy.join(",") === [...inUse].sort().join(",") && idle.length <= pool;
    if (okNow) return;
    if (Date.now() > deadline) {
      assert.deepEqual(busy, [...inUse].sort(), `${what}: the taps in use on ${bridge}`);
      assert.fail(
        `${what}: ${idle.length} idle taps on ${bridge} [${idle}], the pool keeps ${pool}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
