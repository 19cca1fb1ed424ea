// The hostile-input suite's shared harness: a real bangerd (the built dist/, as users run it) in a
// fresh home, a "still alive" check, and a snapshot of everything an input could leave behind.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { startDaemon, tryConnect, type DaemonClient } from "../../src/cli/client.js";
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
  const ownTmp = env.TMPDIR ? null : await fs.mkdtemp(path.join(os.tmpdir(), "hostile-tmp-"));
  const tmp = env.TMPDIR ?? ownTmp!;
  const fullEnv = { ...home.env, TMPDIR: tmp, ...env };
  const pid = await startDaemon({ layout: home.layout, env: fullEnv, notice: () => {} });
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

/** What an input could leave behind on the host. */
export interface Leftovers {
  /** Files under the given roots (relative paths), minus the ones the daemon keeps by design. */
  files: string[];
  /** Entries of the temp dir that look like banger's. */
  tmp: string[];
  /** Network devices with banger's prefixes. */
  links: string[];
  /** nftables tables with banger's prefix. */
  nftTables: string[];
  /** Processes whose command line names one of the roots. */
  processes: string[];
}

// The daemon's own files: present from start-up on, or appended to as it works.
const KEPT = /(^|\/)(bangerd\.log|banger\.db(-wal|-shm|-journal)?|bangerd\.(pid|sock|lock))$/;

/** A snapshot of leftovers under `roots` (the home, say), and host-wide banger traces. */
export async function leftovers(roots: string[]): Promise<Leftovers> {
  const files: string[] = [];
  for (const root of roots) {
    for (const rel of await listTree(root)) if (!KEPT.test(rel)) files.push(`${root}:${rel}`);
  }
  const tmp = (await fs.readdir(os.tmpdir()).catch(() => [] as string[]))
    .filter((n) => /^banger-(kernel|bundle|work|caps|stage|pull|import)-/.test(n))
    .sort();
  const links = await run("ip", ["-o", "link", "show"])
    .then(({ stdout }) =>
      stdout
        .split("\n")
        .map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] ?? "")
        .filter((n) => n.startsWith("bg-") || n.startsWith("banger")),
    )
    .catch(() => [] as string[]);
  const nftTables = await run("nft", ["list", "tables"])
    .then(({ stdout }) => stdout.split("\n").filter((l) => /banger/.test(l)))
    .catch(() => [] as string[]);
  const processes = await run("ps", ["-eo", "pid=,args="])
    .then(({ stdout }) =>
      stdout
        .split("\n")
        .filter((l) => roots.some((r) => l.includes(r)) && !/bangerd|\bps\b/.test(l)),
    )
    .catch(() => [] as string[]);
  return { files: files.sort(), tmp, links: links.sort(), nftTables, processes };
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
 * must still answer and nothing may be left behind under `roots` (and the daemon's TMPDIR).
 */
export async function runTable<I>(
  rows: Array<HostileRow<I>>,
  attempt: (input: I, row: HostileRow<I>) => Promise<unknown>,
  opts: {
    daemon?: HostileDaemon;
    roots?: string[];
    /**
     * Host-wide kinds not to check: a table whose daemon runs user-mode networking cannot make
     * links or nft tables, and other tests running at once may.
     */
    ignore?: Array<keyof Leftovers>;
  } = {},
): Promise<void> {
  // The daemon's own TMPDIR is always checked, unless it already lies under a root.
  const roots = [...(opts.roots ?? [])];
  const tmp = opts.daemon?.tmp;
  if (tmp && !roots.some((r) => tmp === r || tmp.startsWith(`${r}/`))) roots.push(tmp);
  for (const row of rows) {
    const before = await leftovers(roots);
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
    const after = await leftovers(roots);
    for (const key of opts.ignore ?? []) after[key] = before[key];
    assertNothingLeft(before, after, row.name);
  }
}

/** Counts rows across tables, for the suite's summary line. */
export function countRows(...tables: Array<readonly unknown[]>): number {
  return tables.reduce((n, t) => n + t.length, 0);
}

/** For `ignore`: what a daemon on user-mode networking (the default in tests) cannot leave. */
export const USER_NET: Array<keyof Leftovers> = ["links", "nftTables"];
