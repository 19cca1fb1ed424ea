import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { hostileDaemon, leftovers, runTable, type HostileDaemon } from "./harness.js";

// The harness itself must catch what it exists to catch, or every table built on it is hollow.
let daemon: HostileDaemon;
before(async () => {
  daemon = await hostileDaemon();
});
after(async () => {
  await daemon?.close();
});

test("harness: a row that leaves a file behind fails", async () => {
  const stray = `${daemon.home.home}/stray`;
  await assert.rejects(
    runTable(
      [{ name: "leaves a file", input: stray, expect: null }],
      async (file) => {
        const fs = await import("node:fs/promises");
        await fs.writeFile(file, "x");
      },
      { daemon, roots: [daemon.home.home] },
    ),
    /left behind \(files\).*stray/,
  );
});

test("harness: an accepted input that should have failed fails the row", async () => {
  await assert.rejects(
    runTable([{ name: "accepted", input: 1, expect: /nope/ }], async () => {}, { daemon }),
    /was accepted/,
  );
});

test("harness: an error that blames banger fails the row", async () => {
  await assert.rejects(
    runTable(
      [{ name: "bug", input: 1, expect: /x/ }],
      async () => {
        throw new Error("x: internal error (a bug in banger)");
      },
      { daemon },
    ),
    /reported as a bug/,
  );
});

test("harness: the daemon answers ping, and a clean snapshot is stable", async () => {
  await daemon.assertAlive();
  const a = await leftovers([daemon.home.home]);
  const b = await leftovers([daemon.home.home]);
  assert.deepEqual(a, b);
});
