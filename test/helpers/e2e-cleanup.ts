import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { bangerBin } from "./cli.js";
import type { TempLayout } from "./temp-home.js";

const run = promisify(execFile);

export interface E2eLeftovers {
  /** Bridges the test made (or made banger make); removed with their taps. */
  bridges?: string[];
  /** nft tables (family ip) the test made or banger made for it. */
  nftTables?: string[];
  /** Temp dirs and files beside the home. */
  paths?: string[];
  /** Runs last, best-effort: stop the test's own servers, namespaces, helpers. */
  extra?: Array<() => unknown>;
  /** How to run `banger` for this home (as the daemon's user, from where it can read it); default as is. */
  wrap?: (cmd: string, args: string[]) => [string, string[]];
}

/** Each step gets this long; a hung CLI must not keep the rest from running. */
const STEP_MS = 60_000;

/**
 * Removes everything an e2e test home may have made, each step best-effort and
 * bounded, so one failure (or a hung daemon) never skips the rest: delete every
 * VM through the daemon, kill any VMM still running from this home by the pid
 * files under it (never a host-wide match on a VM name), stop the daemon (and kill
 * it if it does not stop), remove the test's bridges, taps, nft tables and paths,
 * then the home. Returns the steps that failed, for a test that wants to know.
 */
export async function cleanupE2eHome(
  home: TempLayout | undefined,
  leftovers: E2eLeftovers = {},
): Promise<string[]> {
  const failed: string[] = [];
  const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      failed.push(`${what}: ${(err as Error).message}`);
    }
  };
  if (home) {
    const wrap =
      leftovers.wrap ?? ((cmd: string, args: string[]): [string, string[]] => [cmd, args]);
    const banger = (...args: string[]) => {
      const [cmd, argv] = wrap(bangerBin, args);
      return run(cmd, argv, { env: home.env, timeout: STEP_MS, maxBuffer: 16 * 2 ** 20 });
    };
    await step("delete VMs", async () => {
      const list = await banger("vm", "list", "--json");
      const names = (JSON.parse(list.stdout) as Array<{ name: string }>).map((v) => v.name);
      for (const name of names) await banger("vm", "kill", name).catch(() => undefined);
      if (names.length > 0) await banger("vm", "delete", ...names);
    });
    await step("kill VMMs", () => killHomeVmms(home));
    await step("stop daemon", () => banger("daemon", "stop"));
    await step("kill daemon", () => killByPidFile(home.layout.pidFile, "bangerd"));
  }
  for (const bridge of leftovers.bridges ?? []) {
    await step(`taps of ${bridge}`, async () => {
      const r = await run("ip", ["-o", "link", "show", "master", bridge]);
      for (const tap of r.stdout.matchAll(/^\d+: (bg-[^:@\s]+)[@:]/gm))
        await run("ip", ["link", "del", tap[1]!]).catch(() => undefined);
    });
    await step(`bridge ${bridge}`, async () => {
      if (await linkExists(bridge)) await run("ip", ["link", "del", bridge]);
    });
  }
  for (const table of leftovers.nftTables ?? [])
    await step(`nft table ${table}`, async () => {
      const r = await run("nft", ["list", "tables", "ip"]).catch(() => ({ stdout: "" }));
      if (r.stdout.split("\n").some((l) => l.trim() === `table ip ${table}`))
        await run("nft", ["delete", "table", "ip", table]);
    });
  for (const fn of leftovers.extra ?? []) await step("extra", async () => fn());
  for (const p of leftovers.paths ?? [])
    await step(`rm ${p}`, () => fs.rm(p, { recursive: true, force: true }));
  if (home) await step("rm home", () => home.cleanup());
  return failed;
}

/** SIGKILLs every VMM whose pid file lies under this home (and whose command line names it). */
export async function killHomeVmms(home: TempLayout): Promise<void> {
  const vmsDir = home.layout.vmsDir;
  const dirs = await fs.readdir(vmsDir).catch(() => [] as string[]);
  for (const dir of dirs) {
    const vmDir = path.join(vmsDir, dir);
    await killByPidFile(path.join(vmDir, "qemu.pid"), vmDir);
    // handles.json names the VMM's pid for either driver, and passt's and the filter's (--nat).
    const handles = await fs.readFile(path.join(vmDir, "handles.json"), "utf8").catch(() => "");
    for (const m of handles.matchAll(/"(?:pid|passtPid|relayPid)":\s*(\d+)/g))
      await killPid(Number(m[1]), vmDir);
  }
}

/** Kills the pid in `file` if its command line contains `mark` (a recycled pid is not ours). */
async function killByPidFile(file: string, mark: string): Promise<void> {
  await killPid(Number.parseInt(await fs.readFile(file, "utf8").catch(() => ""), 10), mark);
}

async function killPid(pid: number, mark: string): Promise<void> {
  if (!Number.isInteger(pid) || pid <= 1) return;
  const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  if (!cmdline.replace(/\0/g, " ").includes(mark)) return;
  process.kill(pid, "SIGKILL");
  for (let i = 0; i < 100; i++) {
    if (
      !(await fs.access(`/proc/${pid}`).then(
        () => true,
        () => false,
      ))
    )
      return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function linkExists(name: string): Promise<boolean> {
  return run("ip", ["link", "show", name]).then(
    () => true,
    () => false,
  );
}
