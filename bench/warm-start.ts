// Benchmark: warm start (restore a boot snapshot) against a cold boot, in one run, under the
// same load. Prints ratios of medians:
// 1. `vm run --rm -- true`, warm against `--cold`. Target <= 0.2x.
// 2. `vm create` to SSH-ready, warm against `--cold`. Target <= 0.1x.
// 3. Restore (warm create) with 1, 2 and 4 GiB of guest memory, the same idle guest: it must not
//    grow with configured memory beyond what the guest used (ratio 4 GiB / 1 GiB near 1).
// 4. The boot snapshot of an idle default-image guest: its size and how long the save paused it.
// Not a test: run `make bench` (or this file alone; BANGER_TEST_SHARED reuses a built kernel and image).
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { bangerBin as banger, deleteEveryVm } from "../test/helpers/cli.js";
import { useSharedDefaultImage } from "../test/helpers/shared-image.js";
import { tempLayout } from "../test/helpers/temp-home.js";

const run = promisify(execFile);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const home = await tempLayout("banger-bench-warm-");
const env = home.env;
const b = (...args: string[]) =>
  run(banger, args, { env, timeout: 900_000, maxBuffer: 64 * 2 ** 20 });
const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
const shape = (memory: string) => ["--memory", memory, "--vcpu", "1", "--disk-size", "2G"];

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

let n = 0;
/** One create of this shape, then its delete (not timed); returns seconds and whether it restored. */
async function create(memory: string, cold: boolean): Promise<{ s: number; restored: boolean }> {
  const name = `w${n++}`;
  let out = "";
  const s = await timed(async () => {
    out = (
      await b(
        "vm",
        "create",
        "--name",
        name,
        "--json",
        ...(cold ? ["--cold"] : []),
        ...shape(memory),
      )
    ).stdout;
  });
  await b("vm", "delete", name);
  return { s, restored: (JSON.parse(out) as { restored?: boolean }).restored === true };
}

try {
  await useSharedDefaultImage(home);
  console.log("first create of each shape (cold, saves its boot snapshot; not timed) ...");
  for (const memory of ["1G", "2G", "4G"]) await create(memory, false);
  const snaps = JSON.parse((await b("snapshot", "list", "--json")).stdout) as Array<{
    memoryBytes: number;
    bytes: number;
  }>;
  for (const s of snaps)
    console.log(
      `boot snapshot of an idle ${s.memoryBytes / 2 ** 30} GiB guest: ${(s.bytes / 2 ** 20).toFixed(0)} MiB on disk`,
    );

  const cold: number[] = [];
  const warm: number[] = [];
  const runCold: number[] = [];
  const runWarm: number[] = [];
  const byMemory: Record<string, number[]> = { "1G": [], "2G": [], "4G": [] };
  for (let i = 0; i < ROUNDS; i++) {
    cold.push((await create("1G", true)).s);
    const w = await create("1G", false);
    if (!w.restored) throw new Error("a warm create did not restore: see bangerd.log");
    warm.push(w.s);
    for (const memory of ["2G", "4G"]) byMemory[memory]!.push((await create(memory, false)).s);
    byMemory["1G"]!.push(w.s);
    runCold.push(await timed(() => b("vm", "run", "--rm", "--cold", ...shape("1G"), "--", "true")));
    runWarm.push(await timed(() => b("vm", "run", "--rm", ...shape("1G"), "--", "true")));
  }
  const ratio = (x: number[], y: number[]) => (median(x) / median(y)).toFixed(2);
  console.log(
    `vm run --rm -- true: warm ${median(runWarm).toFixed(1)} s, cold ${median(runCold).toFixed(1)} s: ${ratio(runWarm, runCold)}x (target <= 0.2x)`,
  );
  console.log(
    `vm create to SSH-ready: warm ${median(warm).toFixed(1)} s, cold ${median(cold).toFixed(1)} s: ${ratio(warm, cold)}x (target <= 0.1x)`,
  );
  console.log(
    `restore by guest memory: 1 GiB ${median(byMemory["1G"]!).toFixed(2)} s, 2 GiB ${median(byMemory["2G"]!).toFixed(2)} s, 4 GiB ${median(byMemory["4G"]!).toFixed(2)} s: 4/1 = ${ratio(byMemory["4G"]!, byMemory["1G"]!)}x (same idle guest: near 1)`,
  );
  await b("vm", "create", "--name", "idle", "--cold", ...shape("1G"));
  const saved = await timed(() => b("vm", "snapshot", "idle", "--name", "idle-snap"));
  const snap = JSON.parse((await b("snapshot", "show", "idle-snap", "--json")).stdout) as {
    bytes: number;
  };
  console.log(
    `vm snapshot of an idle 1 GiB default-image guest: ${saved.toFixed(1)} s, ${(snap.bytes / 2 ** 20).toFixed(0)} MiB`,
  );
} finally {
  await deleteEveryVm(env).catch(() => undefined);
  await b("daemon", "stop").catch(() => undefined);
  await home.cleanup();
}
