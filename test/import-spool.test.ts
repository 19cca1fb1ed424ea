// `banger image import -` saves stdin under <state>/imports/; a CLI killed outright (SIGKILL)
// cannot remove its file. The next sweep (the daemon at start, a CLI before it spools) removes
// it, and never the spool of a CLI that still runs.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Readable } from "node:stream";
import { sweepOrphans } from "../src/daemon/sweep.js";
import { withStdinSpool } from "../src/cli/stdin-spool.js";
import { procStartTime, sweepImportSpools } from "../src/image/import-spool.js";
import { Store } from "../src/store/store.js";
import { ensureBuilt } from "./helpers/build.js";
import { bangerBin } from "./helpers/cli.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";
import { waitFor } from "./helpers/wait-for.js";

const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
before(() => ensureBuilt(root));

/**
 * The real CLI in `image import -`, its stdin a pipe left open: it
 * spools what it got and waits for more. Resolves once its spool file exists.
 */
async function spoolingCli(home: TempLayout): Promise<{ child: ChildProcess; file: string }> {
  const before = new Set(await fs.readdir(home.layout.importsDir).catch(() => [] as string[]));
  const child = spawn(bangerBin, ["image", "import", "-", "--name", "x"], {
    env: home.env,
    stdio: ["pipe", "ignore", "ignore"],
  });
  child.stdin!.write(Buffer.alloc(4096));
  const name = await waitFor("the CLI's spool file", 60_000, async () => {
    const names = await fs.readdir(home.layout.importsDir).catch(() => [] as string[]);
    return names.find((n) => !before.has(n)) ?? null;
  });
  return { child, file: path.join(home.layout.importsDir, name) };
}

async function killed(child: ChildProcess): Promise<void> {
  const gone = new Promise((r) => child.once("close", r));
  child.kill("SIGKILL");
  await gone;
}

const exists = (p: string) =>
  fs.lstat(p).then(
    () => true,
    () => false,
  );

test("a spool left by a SIGKILLed CLI is swept by the daemon's start-up sweep and by the next CLI; a live CLI's is kept", async () => {
  const home = await tempLayout("banger-spool-");
  const live: ChildProcess[] = [];
  try {
    // The live one first: every CLI sweeps before it spools, so it would sweep the dead one.
    const running = await spoolingCli(home);
    live.push(running.child);
    const dead = await spoolingCli(home);
    await killed(dead.child);
    assert.ok(await exists(dead.file), "SIGKILL leaves the spool behind");
    assert.match(path.basename(dead.file), new RegExp(`^stdin-${dead.child.pid}-[0-9]+-`));
    assert.ok(await exists(running.file), "the second CLI kept the first one's spool");
    // Not a spool's name, or not a file: never touched.
    const foreign = path.join(home.layout.importsDir, "notes.txt");
    await fs.writeFile(foreign, "mine\n");
    const dir = path.join(home.layout.importsDir, `stdin-1-1-${"a".repeat(12)}.tar`);
    await fs.mkdir(dir);

    const store = Store.open(home.layout.dbFile);
    try {
      const swept = await sweepOrphans({ store, layout: home.layout });
      assert.deepEqual(swept.removed, [dead.file]);
    } finally {
      store.close();
    }
    assert.equal(await exists(dead.file), false, "the dead CLI's spool is removed");
    assert.ok(await exists(running.file), "the live CLI's spool is kept");
    assert.ok((await exists(foreign)) && (await exists(dir)), "what is not a spool stays");

    // The next CLI sweeps before it spools, too.
    const again = await spoolingCli(home);
    await killed(again.child);
    let spooled = "";
    await withStdinSpool(home.layout.importsDir, Readable.from([Buffer.from("x")]), async (f) => {
      spooled = f;
      assert.equal(await exists(again.file), false, "swept before spooling");
      assert.ok(await exists(running.file), "a live CLI's spool is kept");
    });
    assert.equal(await exists(spooled), false, "its own spool is removed afterwards");
  } finally {
    for (const c of live) await killed(c);
    await home.cleanup();
  }
});

test("a spool whose pid now belongs to another process (a start time that differs) is swept", async () => {
  const home = await tempLayout("banger-spool-");
  try {
    await fs.mkdir(home.layout.importsDir, { recursive: true });
    const started = await procStartTime(process.pid);
    assert.ok(started, "this process's start time is readable");
    const mine = path.join(
      home.layout.importsDir,
      `stdin-${process.pid}-${started}-${"b".repeat(12)}.tar`,
    );
    const reused = path.join(
      home.layout.importsDir,
      `stdin-${process.pid}-${Number(started) + 1}-${"c".repeat(12)}.tar`,
    );
    await fs.writeFile(mine, "");
    await fs.writeFile(reused, "");
    assert.deepEqual(await sweepImportSpools(home.layout.importsDir), [reused]);
    assert.ok(await exists(mine));
    // A process that cannot read its own start time cannot tell live from dead: it removes nothing.
    assert.deepEqual(await sweepImportSpools(home.layout.importsDir, async () => null), []);
    assert.ok(await exists(mine));
  } finally {
    await home.cleanup();
  }
});
