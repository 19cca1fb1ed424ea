import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { laneName } from "./helpers/vm-lane.js";

// The VM lane keeps two VM-booting test files of one run apart (test/helpers/vm-lane.ts): real
// processes join a lane of their own (a run of its own: its own BANGER_TEST_SHARED).
const lane = fileURLToPath(new URL("./helpers/vm-lane.ts", import.meta.url));
const run = await fs.mkdtemp(path.join(os.tmpdir(), "banger-lane-"));
const children: ChildProcess[] = [];
after(async () => {
  for (const c of children) c.kill("SIGKILL");
  await fs.rm(run, { recursive: true, force: true });
});

/** A process that joins the lane, says "held", and stays until killed. */
function holder(): { child: ChildProcess; held: Promise<number> } {
  const code = `import(${JSON.stringify(lane)}).then((m) => m.joinVmLane()).then(() => {
    console.log("held"); setInterval(() => {}, 1000);
  });`;
  const child = spawn(process.execPath, ["--import", "tsx", "--eval", code], {
    env: { ...process.env, BANGER_TEST_SHARED: run },
    stdio: ["ignore", "pipe", "inherit"],
  });
  children.push(child);
  const held = new Promise<number>((resolve, reject) => {
    child.stdout!.on("data", (c: Buffer) => {
      if (c.toString().includes("held")) resolve(Date.now());
    });
    child.on("exit", (code) => reject(new Error(`the holder exited ${code} before holding`)));
  });
  return { child, held };
}

test("one process at a time holds a run's VM lane; a killed holder frees it", async () => {
  const first = holder();
  await first.held;
  const second = holder();
  const waited = await Promise.race([
    second.held.then(() => false),
    new Promise<boolean>((r) => setTimeout(() => r(true), 2_000)),
  ]);
  assert.ok(waited, "the second process got the lane while the first held it");
  first.child.kill("SIGKILL");
  await second.held;
  second.child.kill("SIGKILL");
});

test("each run (BANGER_TEST_SHARED) has a lane of its own", () => {
  assert.notEqual(laneName({ BANGER_TEST_SHARED: "/a" }), laneName({ BANGER_TEST_SHARED: "/b" }));
  assert.equal(laneName({ BANGER_TEST_SHARED: "/a/" }), laneName({ BANGER_TEST_SHARED: "/a" }));
  assert.notEqual(laneName({}), laneName({ BANGER_TEST_SHARED: "/a" }));
});
