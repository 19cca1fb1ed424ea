// Runs last (scripts/test-files.sh lists it last): fails on anything a test left on this machine.
// `make test` runs two files at a time, so this one starts while the last other file still runs: it
// first waits (bounded) until no other test file of its run is running, i.e. no process beside it
// under the same runner (the same parent pid) runs a *.test.ts. It must fail on what tests leak and never on the user's own banger (a demo
// daemon as root on banger0, its VMs under ~/.local/state), so everything is judged by where
// it comes from:
//
// - A test dir is a direct child of os.tmpdir() named like a test's mkdtemp
//   (`banger-<prefix>-XXXXXX`: tempLayout's banger-test-/banger-e2e-..., the helper's socket
//   and install dirs) or `make test`'s `banger-test-shared.XXXXXX`. Not test dirs: banger's own
//   staging prefixes (banger-work-, banger-caps-, banger-kernel-, banger-bundle-), which any
//   daemon makes, the user's too (their leaks are checked by the tests of that code), and this
//   run's BANGER_TEST_SHARED, which `make test` removes after this file.
// - A test process is any process whose command line names a path in a test dir or the run's
//   shared dir (QEMU, passt, slirp4netns, banger's filter, ssh, a session's child), or whose
//   BANGER_HOME lies in one (bangerd, the CLI). Only the shared home's bangerd is left alone:
//   `make test` stops it afterwards.
// - The user's bridges are banger0 (the default), the bridge of this environment's own config,
//   and the bridge of every running bangerd that is not a test's. Every other bridge named
//   banger* was made by a test.
// - A bg- tap is a leak when a test process holds it, when it is on no bridge, when it is on a
//   test bridge, or when it is idle (nobody holds it) on a bridge no running non-test bangerd
//   serves: a daemon removes its idle pool taps when it stops, and the taps a user's VMs hold
//   stay theirs.
// - An nft table banger* is a leak unless it is the NAT table of a bridge a running non-test
//   bangerd serves (a daemon removes it when it stops).
// - The outside world of test/helpers/outside-world.ts (netns banger-ow-*, veths bangerow*/
//   bangerop*) is always a test's.
//
// A suite running at the same time from another runner (another checkout's) is seen as a leak.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { promisify } from "node:util";
import { defaultConfig, readConfigSync } from "../src/config/config.js";
import { natTable } from "../src/net/privileged.js";
import { resolveLayout, type Env } from "../src/paths/layout.js";
import { parentPid, tunHolders } from "./helpers/procs.js";

const run = promisify(execFile);
const TMP = path.resolve(os.tmpdir());
const SHARED = process.env.BANGER_TEST_SHARED ? path.resolve(process.env.BANGER_TEST_SHARED) : null;
const OWN_STAGING = ["banger-work-", "banger-caps-", "banger-kernel-", "banger-bundle-"];
const DEFAULT_BRIDGE = defaultConfig().network.bridge;

function isTestDirName(name: string): boolean {
  if (OWN_STAGING.some((p) => name.startsWith(p))) return false;
  return (
    /^banger-[a-z0-9-]+-[A-Za-z0-9]{6}$/.test(name) ||
    /^banger-test-shared\.[A-Za-z0-9]{6}$/.test(name)
  );
}

/** The test dir (or the shared dir) a path lies in, if any: judged by name, so a removed home still counts. */
function testDirOf(p: string): string | null {
  if (SHARED && (p === SHARED || p.includes(`${SHARED}/`))) return SHARED;
  const at = p.indexOf(`${TMP}/`);
  if (at < 0) return null;
  const name = p.slice(at + TMP.length + 1).split("/")[0] ?? "";
  return isTestDirName(name) ? path.join(TMP, name) : null;
}

interface Proc {
  pid: number;
  argv: string[];
  env: Map<string, string>;
}

async function processes(): Promise<Proc[]> {
  const out: Proc[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const argv = (await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => ""))
      .split("\0")
      .filter(Boolean);
    if (argv.length === 0) continue;
    const environ = await fs.readFile(`/proc/${entry}/environ`, "utf8").catch(() => "");
    const env = new Map<string, string>();
    for (const kv of environ.split("\0")) {
      const eq = kv.indexOf("=");
      if (eq > 0) env.set(kv.slice(0, eq), kv.slice(eq + 1));
    }
    out.push({ pid: Number(entry), argv, env });
  }
  return out;
}

const isBangerd = (p: Proc) => p.argv.slice(0, 2).some((a) => path.basename(a) === "bangerd");

/** The test dir a process belongs to, if any (its command line, else its BANGER_HOME). */
function testDirOfProc(p: Proc): string | null {
  for (const a of p.argv) {
    const dir = testDirOf(a);
    if (dir) return dir;
  }
  const home = p.env.get("BANGER_HOME");
  return home ? testDirOf(path.resolve(home)) : null;
}

/** The bridge a daemon serves, from the config its environment points at. */
function bridgeOf(env: Env, homeDir: string): string {
  try {
    return readConfigSync(resolveLayout(env, homeDir).configFile).network.bridge;
  } catch {
    return DEFAULT_BRIDGE;
  }
}

interface Machine {
  procs: Proc[];
  /** Test processes, by pid, with the test dir each belongs to. */
  testProcs: Map<number, string>;
  /** Bridges that running bangerd processes outside test dirs serve. */
  servedBridges: Set<string>;
  /** The user's bridges: the default, this environment's config, and the served ones. */
  userBridges: Set<string>;
  /** bg- taps with their bridge ("" when on none) and the pids holding them open. */
  taps: Array<{ name: string; master: string; holders: number[] }>;
  bridges: string[];
  links: string[];
}

/** The other test files this file's runner is running (processes with the same parent pid). */
async function siblingTestFiles(): Promise<string[]> {
  const running: string[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    if ((await parentPid(Number(entry))) !== process.ppid) continue;
    const argv = (await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "")).split("\0");
    const file = argv.find((a) => /\.test\.[cm]?[jt]s$/.test(a));
    if (file) running.push(`${file} (pid ${entry})`);
  }
  return running;
}

/** Waits until this run's other test files have ended; fails after `ms`, naming them. */
async function othersEnded(ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const running = await siblingTestFiles();
    if (running.length === 0) return;
    if (Date.now() > deadline)
      assert.fail(
        `other test files still run after ${ms / 60_000} min, so leftovers cannot be told from work in progress: ${running.join(", ")}`,
      );
    await new Promise((r) => setTimeout(r, 1000));
  }
}

let m: Machine;

before(async () => {
  await othersEnded(20 * 60_000);
  const procs = await processes();
  const testProcs = new Map<number, string>();
  const servedBridges = new Set<string>();
  for (const p of procs) {
    const dir = testDirOfProc(p);
    if (dir && !(dir === SHARED && isBangerd(p))) testProcs.set(p.pid, dir);
    else if (!dir && isBangerd(p)) {
      const env = Object.fromEntries(p.env);
      servedBridges.add(bridgeOf(env, env.HOME ?? os.homedir()));
    }
  }
  const userBridges = new Set([
    DEFAULT_BRIDGE,
    bridgeOf(process.env, os.homedir()),
    ...servedBridges,
  ]);
  const links = (await run("ip", ["-o", "link", "show"])).stdout.split("\n");
  const holders = await tunHolders();
  const taps = links.flatMap((line) => {
    const name = /^\d+: (bg-[^:@\s]+)[@:]/.exec(line)?.[1];
    if (!name) return [];
    return [
      { name, master: / master (\S+)/.exec(line)?.[1] ?? "", holders: holders.get(name) ?? [] },
    ];
  });
  const bridges = (await run("ip", ["-o", "link", "show", "type", "bridge"])).stdout
    .split("\n")
    .flatMap((line) => /^\d+: ([^:@\s]+)[@:]/.exec(line)?.[1] ?? []);
  const names = links.flatMap((line) => /^\d+: ([^:@\s]+)[@:]/.exec(line)?.[1] ?? []);
  m = { procs, testProcs, servedBridges, userBridges, taps, bridges, links: names };
});

test("no process of a test home is left (VMMs, passt, bangerd, ssh, ...)", () => {
  const left = m.procs
    .filter((p) => m.testProcs.has(p.pid))
    .map((p) => `${p.pid} (${m.testProcs.get(p.pid)}): ${p.argv.join(" ").slice(0, 200)}`);
  assert.ok(left.length === 0, `processes of test homes are still running:\n${left.join("\n")}`);
});

test("no test temp dir is left under the temp dir", async () => {
  const left = (await fs.readdir(TMP))
    .filter(isTestDirName)
    .map((n) => path.join(TMP, n))
    .filter((p) => p !== SHARED);
  assert.ok(left.length === 0, `test dirs are left in ${TMP}:\n${left.join("\n")}`);
});

test("every bg- tap is the user's (a VM of theirs holds it, or their running daemon's pool)", () => {
  const left = m.taps.flatMap((t) => {
    const byTest = t.holders.filter((pid) => m.testProcs.has(pid));
    if (byTest.length > 0) return [`${t.name}: held by test process ${byTest.join(", ")}`];
    if (!t.master) return [`${t.name}: on no bridge`];
    if (!m.userBridges.has(t.master)) return [`${t.name}: on test bridge ${t.master}`];
    if (t.holders.length === 0 && !m.servedBridges.has(t.master))
      return [`${t.name}: idle on ${t.master}, which no running bangerd (outside tests) serves`];
    return [];
  });
  assert.ok(left.length === 0, `leaked taps:\n${left.join("\n")}`);
});

test("no test bridge is left", () => {
  const left = m.bridges.filter((b) => b.startsWith("banger") && !m.userBridges.has(b));
  assert.ok(left.length === 0, `bridges no user banger owns: ${left.join(", ")}`);
});

test("no banger nft table is left but a running daemon's NAT", async (t) => {
  const listed = await run("nft", ["list", "tables"]).catch((err: Error) => err);
  if (listed instanceof Error) {
    t.skip(`nft list tables failed (needs root): ${listed.message.split("\n")[0]}`);
    return;
  }
  const allowed = new Set([...m.servedBridges].map((b) => `ip ${natTable(b)}`));
  const left = listed.stdout
    .split("\n")
    .flatMap((l) => /^table (\S+ banger\S*)$/.exec(l.trim())?.[1] ?? [])
    .filter((tbl) => !allowed.has(tbl));
  assert.ok(left.length === 0, `nft tables no running banger owns: ${left.join(", ")}`);
});

test("no outside-world namespace or veth of a test is left", async () => {
  const netns = (await run("ip", ["netns", "list"]).catch(() => ({ stdout: "" }))).stdout
    .split("\n")
    .flatMap((l) => /^(banger-ow-\S+)/.exec(l)?.[1] ?? []);
  const veths = m.links.filter((l) => /^bangero[wp][0-9a-f]{4}$/.test(l));
  const left = [...netns, ...veths];
  assert.ok(left.length === 0, `outside-world leftovers: ${left.join(", ")}`);
});
