// The VM lane: at most one test file of a run boots VMs at a time, while files that boot none run
// beside it (`make test` runs two files at once). A file joins the lane the first time it asks for
// the default kernel and image (test/helpers/shared-image.ts does it), since every file that boots
// a VM needs them; it holds the lane until its process exits, so its `after` hooks (VM deletes,
// daemon stops) finish before the next VM file starts.
//
// The lane is a listening unix socket in Linux's abstract namespace: only one process can bind a
// name, and the kernel frees it when that process exits, however it exits (a test file killed by
// the runner leaves no stale lock behind). Anyone connecting is told which file holds it.
import { createHash } from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** How long a file waits for the lane before failing (every other VM file of a run, in turn). */
const WAIT_MS = 20 * 60_000;

const checkout = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));

/** The lane's name: one per run (its BANGER_TEST_SHARED), else one per checkout. */
export function laneName(env: NodeJS.ProcessEnv = process.env): string {
  const key = env.BANGER_TEST_SHARED ? path.resolve(env.BANGER_TEST_SHARED) : checkout;
  return `\0banger-test-vm-lane-${createHash("sha256").update(key).digest("hex").slice(0, 16)}`;
}

let held: Promise<void> | null = null;

/**
 * Waits (bounded) until this process holds the VM lane; later calls return at once. Never
 * released by hand: the process's exit frees it.
 */
export function joinVmLane(env: NodeJS.ProcessEnv = process.env): Promise<void> {
  held ??= timed(acquire(laneName(env), WAIT_MS), env.BANGER_TEST_SHARED);
  return held;
}

/**
 * Under `make test`, each VM file's wait for the lane and its time holding it go to
 * `$BANGER_TEST_SHARED/lane-times` (one line a file, written as its process exits), which
 * `make test` prints at the end: the VM lane is the suite's critical path.
 */
async function timed(acquiring: Promise<void>, shared: string | undefined): Promise<void> {
  const asked = Date.now();
  await acquiring;
  if (!shared) return;
  const got = Date.now();
  const file = path.relative(checkout, process.argv[1] ?? "?");
  process.once("exit", () => {
    const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
    const line = `${s(Date.now() - got).padStart(8)} held, ${s(got - asked).padStart(8)} waited  ${file}\n`;
    try {
      fs.appendFileSync(path.join(shared, "lane-times"), line);
    } catch {
      // The run's shared dir is gone: nothing to report to.
    }
  });
}

async function acquire(name: string, waitMs: number): Promise<void> {
  const me = `${path.relative(checkout, process.argv[1] ?? "?")} (pid ${process.pid})`;
  const deadline = Date.now() + waitMs;
  for (;;) {
    const server = net.createServer((socket) => socket.end(me));
    const bound = await new Promise<boolean>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        err.code === "EADDRINUSE" ? resolve(false) : reject(err),
      );
      server.listen(name, () => resolve(true));
    });
    if (bound) {
      // The lane must not keep the file's process alive once its tests are done.
      server.unref();
      return;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `waited ${waitMs / 60_000} min for the VM lane, still held by ${await holder(name)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** What the lane's holder says it is (its test file and pid). */
function holder(name: string): Promise<string> {
  return new Promise((resolve) => {
    let said = "";
    const socket = net.connect(name);
    socket.setTimeout(2_000, () => socket.destroy());
    socket.on("data", (c: Buffer) => (said += c.toString()));
    socket.on("error", () => resolve("an unknown process"));
    socket.on("close", () => resolve(said || "an unknown process"));
  });
}
