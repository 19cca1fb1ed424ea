// The hostile-input suite's shared harness: a real bangerd (the built dist/, as users run it) in a
// fresh home, a "still alive" check, and a snapshot of everything an input could leave behind.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { startDaemon, tryConnect, type DaemonClient } from "../../src/cli/client.js";
import { natTable } from "../../src/net/privileged.js";
import { parentPid, tunHolders } from "../helpers/procs.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

const run = promisify(execFile);

/** One row of a hostile table: an input, and what the clear error must say. */
export interface HostileRow<I> {
  name: string;
  input: I;
  /** The error message (and hint) must match; null when the input is accepted harmlessly. */
  expect: RegExp | null;
}

export interface HostileDaemon {
  home: TempLayout;
  env: NodeJS.ProcessEnv;
  pid: number;
  /**
   * The daemon's own TMPDIR (made here unless `env` names one), so what it leaves in its temp
   * dir is checked under the table's roots instead of the shared /tmp.
   */
  tmp: string;
  /** A new connection to the daemon (the caller closes it). */
  connect(): Promise<DaemonClient>;
  /** Fails the test unless the daemon answers `daemon.ping` on a fresh connection. */
  assertAlive(): Promise<void>;
  /** Stops the daemon and removes the home (and the TMPDIR made for it). */
  close(): Promise<void>;
}

/** Starts the real bangerd in a fresh home; `env` adds to (or overrides) the home's environment. */
export async function hostileDaemon(env: NodeJS.ProcessEnv = {}): Promise<HostileDaemon> {
  const home = await tempLayout("banger-hostile-");
  const ownTmp = env.TMPDIR
    ? null
    : await fs.mkdtemp(path.join(os.tmpdir(), "banger-hostile-tmp-"));
  const tmp = env.TMPDIR ?? ownTmp!;
  const fullEnv = { ...home.env, TMPDIR: tmp, ...env };
  // A daemon that does not come up must not leave its home and TMPDIR behind for zz-leaks.
  const pid = await startDaemon({ layout: home.layout, env: fullEnv, notice: () => {} }).catch(
    async (err: unknown) => {
      await home.cleanup();
      if (ownTmp) await fs.rm(ownTmp, { recursive: true, force: true });
      throw err;
    },
  );
  const connect = async (): Promise<DaemonClient> => {
    const client = await tryConnect(home.layout);
    assert.ok(client, `bangerd (pid ${pid}) does not answer on ${home.layout.socketFile}`);
    return client;
  };
  return {
    home,
    env: fullEnv,
    pid,
    tmp,
    connect,
    async assertAlive() {
      const client = await connect();
      try {
        const pong = (await withTimeout(client.call("daemon.ping", {}), 10_000)) as {
          pong: boolean;
        };
        assert.equal(pong.pong, true);
      } finally {
        client.close();
      }
    },
    async close() {
      const client = await tryConnect(home.layout).catch(() => null);
      if (client) {
        await withTimeout(client.call("daemon.shutdown", {}), 10_000).catch(() => {});
        client.close();
      }
      await waitGone(pid, 10_000);
      await home.cleanup();
      if (ownTmp) await fs.rm(ownTmp, { recursive: true, force: true });
    },
  };
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    }),
  ]);
}

async function waitGone(pid: number, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // already gone
  }
}

/**
 * What an input could leave behind on the host, scoped to what the table made: other test files
 * run at the same time (`make test` runs two at once), so nothing host-wide is looked at.
 */
export interface Leftovers {
  /** Files under the given roots (relative paths), minus the ones the daemon keeps by design. */
  files: string[];
  /** Entries that look like banger's staging dirs in the table's own temp dirs. */
  tmp: string[];
  /** Taps the table's processes hold open, and the table's own bridges with the taps on them. */
  links: string[];
  /** nftables tables of the table's own bridges. */
  nftTables: string[];
  /** Processes whose command line names one of the roots. */
  processes: string[];
}

/** What a table owns besides its roots. */
export interface LeftoverScope {
  /** Temp dirs only the table uses (its TMPDIR): banger's staging dirs there count. */
  tmp?: string[];
  /** Bridges only the table's daemon serves: the bridge, its taps and its NAT table count. */
  bridges?: string[];
  /** Pids whose process trees are the table's (its daemon): the taps they hold count. */
  pids?: number[];
}

// The daemon's own files: present from start-up on, or appended to as it works.
const KEPT = /(^|\/)(bangerd\.log|banger\.db(-wal|-shm|-journal)?|bangerd\.(pid|sock|lock))$/;
const STAGING = /^banger-(kernel|bundle|work|caps|stage|pull|import)-/;

/** A snapshot of leftovers under `roots` (the home, say) and of what `scope` names. */
export async function leftovers(roots: string[], scope: LeftoverScope = {}): Promise<Leftovers> {
  const files: string[] = [];
  for (const root of roots) {
    for (const rel of await listTree(root)) if (!KEPT.test(rel)) files.push(`${root}:${rel}`);
  }
  const tmp: string[] = [];
  for (const dir of scope.tmp ?? [])
    for (const n of await fs.readdir(dir).catch(() => [] as string[]))
      if (STAGING.test(n)) tmp.push(path.join(dir, n));
  const procs = await processTable();
  const ours = tableProcesses(procs, roots, scope.pids ?? []);
  const links: string[] = [];
  for (const [tap, holders] of await tunHolders())
    if (holders.some((pid) => ours.has(pid))) links.push(`${tap} (held by ${holders.join(", ")})`);
  const nftTables: string[] = [];
  for (const bridge of scope.bridges ?? []) {
    const shown = await run("ip", ["-o", "link", "show", "master", bridge]).catch(() => null);
    if (shown) {
      links.push(bridge);
      for (const tap of shown.stdout.matchAll(/^\d+: ([^:@\s]+)[@:]/gm))
        links.push(`${tap[1]} (on ${bridge})`);
    }
    const table = natTable(bridge);
    if (
      await run("nft", ["list", "table", "ip", table]).then(
        () => true,
        () => false,
      )
    )
      nftTables.push(`ip ${table}`);
  }
  const processes = procs
    .filter((p) => roots.some((r) => p.args.includes(r)) && !/bangerd|\bps\b/.test(p.args))
    .map((p) => `${p.pid} ${p.args}`);
  return { files: files.sort(), tmp: tmp.sort(), links: links.sort(), nftTables, processes };
}

interface Proc {
  pid: number;
  ppid: number;
  args: string;
}

async function processTable(): Promise<Proc[]> {
  const out: Proc[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const ppid = await parentPid(Number(entry));
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (ppid === null || !cmdline) continue;
    out.push({ pid: Number(entry), ppid, args: cmdline.split("\0").join(" ").trim() });
  }
  return out;
}

/** The table's processes: those naming a root, and the trees of `pids`. */
function tableProcesses(procs: Proc[], roots: string[], pids: number[]): Set<number> {
  const ours = new Set(pids);
  for (const p of procs) if (roots.some((r) => p.args.includes(r))) ours.add(p.pid);
  for (let grew = true; grew;) {
    grew = false;
    for (const p of procs) {
      if (ours.has(p.pid) || !ours.has(p.ppid)) continue;
      ours.add(p.pid);
      grew = true;
    }
  }
  return ours;
}

async function listTree(root: string, rel = ""): Promise<string[]> {
  const dir = path.join(root, rel);
  const names = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  const out: string[] = [];
  for (const d of names) {
    const child = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) out.push(...(await listTree(root, child)));
    else out.push(child);
  }
  return out;
}

/** Fails with what appeared since `before`. */
export function assertNothingLeft(before: Leftovers, after: Leftovers, what: string): void {
  for (const key of Object.keys(before) as Array<keyof Leftovers>) {
    const added = after[key].filter((x) => !before[key].includes(x));
    assert.deepEqual(added, [], `${what}: left behind (${key}): ${added.join(", ")}`);
  }
}

/** Asserts that `err` is a clear error matching `expect` (message and hint together). */
export function assertClearError(err: unknown, expect: RegExp, what: string): void {
  assert.ok(err instanceof Error, `${what}: expected an error, got ${String(err)}`);
  const hint = (err as { hint?: string }).hint;
  const text = `${err.message}${hint ? `\n${hint}` : ""}`;
  assert.match(text, expect, `${what}: unclear error: ${text}`);
  assert.doesNotMatch(text, /bug in banger|internal error/i, `${what}: reported as a bug: ${text}`);
}

/**
 * Runs every row: `attempt` tries the input; the outcome must match the row, then the daemon
 * must still answer and nothing may be left behind under `roots`, in the table's temp dirs (the
 * daemon's TMPDIR, and a TMPDIR of its own this process uses while the table runs), or by the
 * daemon's processes (a tap held open).
 */
export async function runTable<I>(
  rows: Array<HostileRow<I>>,
  attempt: (input: I, row: HostileRow<I>) => Promise<unknown>,
  opts: {
    daemon?: HostileDaemon;
    roots?: string[];
    /** Bridges only this table's daemon serves (their taps and NAT table count too). */
    bridges?: string[];
  } = {},
): Promise<void> {
  // The daemon's own TMPDIR is always checked, unless it already lies under a root.
  const roots = [...(opts.roots ?? [])];
  const daemonTmp = opts.daemon?.tmp;
  if (daemonTmp && !roots.some((r) => daemonTmp === r || daemonTmp.startsWith(`${r}/`)))
    roots.push(daemonTmp);
  const tableTmp = await fs.mkdtemp(path.join(os.tmpdir(), "banger-table-tmp-"));
  const scope: LeftoverScope = {
    tmp: [tableTmp, ...(daemonTmp ? [daemonTmp] : [])],
    bridges: opts.bridges ?? [],
    pids: opts.daemon ? [opts.daemon.pid] : [],
  };
  const savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = tableTmp;
  try {
    for (const row of rows) {
      const before = await leftovers(roots, scope);
      let outcome: unknown = undefined;
      let failed = false;
      try {
        await attempt(row.input, row);
      } catch (err) {
        failed = true;
        outcome = err;
      }
      if (row.expect) {
        assert.ok(failed, `${row.name}: was accepted, expected an error matching ${row.expect}`);
        assertClearError(outcome, row.expect, row.name);
      } else if (failed) {
        assert.fail(`${row.name}: expected to be accepted, failed: ${(outcome as Error).message}`);
      }
      if (opts.daemon) await opts.daemon.assertAlive();
      const after = await leftovers(roots, scope);
      assertNothingLeft(before, after, row.name);
    }
  } finally {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
    await fs.rm(tableTmp, { recursive: true, force: true });
  }
}

/** Counts rows across tables, for the suite's summary line. */
export function countRows(...tables: Array<readonly unknown[]>): number {
  return tables.reduce((n, t) => n + t.length, 0);
}
