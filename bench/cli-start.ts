// Benchmark: how fast the CLI starts, against `node -e 0` measured in the same run.
// Runs, interleaved round by round so a busy machine slows every command alike:
//   node -e 0                       the baseline: Node starting and doing nothing
//   banger --version                target <= 1.2x
//   banger vm ls                    target <= 1.5x (daemon running: connect, one call, a table)
//   banger __complete -- vm show "" tab completion of VM names from the running daemon
//                                   target <= 1.5x, like vm ls (it never starts a daemon)
//   banger __complete -- ""         tab completion of a group's name: the whole command tree
//                                   target <= 1.5x
// The daemon runs in a temporary BANGER_HOME with user-mode networking and holds no VM (the
// list call and the table code run all the same).
// Not a test: run `make bench`, or `node --import tsx bench/cli-start.ts [rounds=30]`.
import { spawnSync } from "node:child_process";
import { bangerBin as banger } from "../test/helpers/cli.js";
import { tempLayout } from "../test/helpers/temp-home.js";

const rounds = Number(process.argv[2] ?? 30);
const home = await tempLayout("banger-bench-cli-");

interface Case {
  label: string;
  args: string[];
  /** Largest ratio to the baseline that meets the target; null for the baseline itself. */
  target: number | null;
}

// Every command runs as `node <script>`, so the launcher's shebang lookup is not measured for
// banger alone.
const cases: Case[] = [
  { label: "node -e 0", args: ["-e", "0"], target: null },
  { label: "banger --version", args: [banger, "--version"], target: 1.2 },
  { label: "banger vm ls", args: [banger, "vm", "ls"], target: 1.5 },
  {
    label: "banger __complete -- vm show ''",
    args: [banger, "__complete", "--", "vm", "show", ""],
    target: 1.5,
  },
  { label: "banger __complete -- ''", args: [banger, "__complete", "--", ""], target: 1.5 },
];

/** Wall time of one run in milliseconds; a failing command fails the bench. */
function timeOnce(args: string[]): number {
  const start = process.hrtime.bigint();
  const r = spawnSync(process.execPath, args, { env: home.env, encoding: "utf8", timeout: 60_000 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`node ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return ms;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

try {
  const started = spawnSync(banger, ["daemon", "start"], { env: home.env, encoding: "utf8" });
  if (started.status !== 0) throw new Error(`banger daemon start failed: ${started.stderr}`);
  // Warm the page cache and the daemon before measuring.
  for (const c of cases) timeOnce(c.args);

  const times = cases.map(() => [] as number[]);
  for (let round = 0; round < rounds; round++) {
    // Rotate the order too: whichever runs right after another may find warmer caches.
    for (let i = 0; i < cases.length; i++) {
      const k = (i + round) % cases.length;
      times[k]!.push(timeOnce(cases[k]!.args));
    }
  }

  const base = median(times[0]!);
  let met = true;
  console.log(`CLI start-up, median of ${rounds} interleaved runs:`);
  cases.forEach((c, i) => {
    const ms = median(times[i]!);
    const ratio = ms / base;
    const verdict =
      c.target === null
        ? "(baseline)"
        : `${ratio.toFixed(2)}x (target <= ${c.target}x: ${ratio <= c.target ? "met" : "NOT met"})`;
    if (c.target !== null && ratio > c.target) met = false;
    console.log(`  ${c.label.padEnd(34)} ${ms.toFixed(0).padStart(5)} ms  ${verdict}`);
  });
  console.log(met ? "all targets met" : "some targets NOT met");
} finally {
  spawnSync(banger, ["daemon", "stop"], { env: home.env });
  await home.cleanup();
}
