// Benchmark: memory of finalising a layer with many small entries (the daemon once grew to
// 877 MB on a 200k-entry layer). Runs finaliseImage in a child process for N/10 and N entries
// and prints, for each, the peak live heap (sampled after a forced GC: what the code holds)
// and the peak RSS; a flat profile shows as a live-heap ratio near 1. Not a test: `make bench`.
// Usage: node --import tsx bench/image-entries.ts [entries=200000]
//        BENCH_HEAP=<MiB> also caps the child's heap (a run that holds O(entries) then fails).
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";

const n = Number(process.argv[2] ?? 200_000);

/** A tar of `count` one-byte files owned by 1000:1000 (every entry needs its owner re-applied). */
async function layer(work: string, count: number): Promise<string> {
  const tree = path.join(work, "src");
  for (let d = 0; d * 1000 < count; d++) {
    const dir = path.join(tree, `d${d}`);
    await fs.mkdir(dir, { recursive: true });
    for (let i = d * 1000; i < Math.min(count, (d + 1) * 1000); i++)
      await fs.writeFile(path.join(dir, `f${i}`), "x");
  }
  const file = path.join(work, "layer.tar");
  execFileSync("tar", ["--owner=1000", "--group=1000", "-C", tree, "-cf", file, "."]);
  await fs.rm(tree, { recursive: true, force: true });
  return file;
}

if (process.env.BENCH_CHILD) {
  const { finaliseImage } = await import("../src/image/finalise.js");
  const { createCommandRunner } = await import("../src/system/runner.js");
  const staging = process.env.BENCH_CHILD;
  const gc = (globalThis as { gc?: () => void }).gc!;
  let liveMiB = 0;
  const sample = setInterval(() => {
    gc();
    liveMiB = Math.max(liveMiB, process.memoryUsage().heapUsed / 2 ** 20);
  }, 1000);
  const t0 = performance.now();
  const result = await finaliseImage({
    layers: [path.join(staging, "layer.tar")],
    stagingDir: staging,
    runner: createCommandRunner(),
  });
  clearInterval(sample);
  const secs = (performance.now() - t0) / 1000;
  const rssMiB = process.resourceUsage().maxRSS / 1024;
  console.log(JSON.stringify({ files: result.files, secs, liveMiB, rssMiB }));
} else {
  const results: Array<{ count: number; live: number; rss: number; secs: number }> = [];
  for (const count of [Math.floor(n / 10), n]) {
    const work = await fs.mkdtemp(path.join(os.tmpdir(), "banger-bench-entries-"));
    try {
      await layer(work, count);
      const heap = process.env.BENCH_HEAP ? [`--max-old-space-size=${process.env.BENCH_HEAP}`] : [];
      const out = execFileSync(
        process.execPath,
        [...heap, "--expose-gc", "--import", "tsx", import.meta.filename],
        { env: { ...process.env, BENCH_CHILD: work }, encoding: "utf8" },
      );
      const r = JSON.parse(out.trim().split("\n").at(-1)!) as {
        secs: number;
        liveMiB: number;
        rssMiB: number;
      };
      results.push({ count, live: r.liveMiB, rss: r.rssMiB, secs: r.secs });
    } finally {
      await fs.rm(work, { recursive: true, force: true });
    }
  }
  for (const r of results)
    console.log(
      `${r.count} entries: peak live heap ${r.live.toFixed(0)} MiB, peak RSS ${r.rss.toFixed(0)} MiB, ${r.secs.toFixed(1)} s`,
    );
  const [small, large] = results as [(typeof results)[0], (typeof results)[0]];
  console.log(
    `ratio (${n} vs ${Math.floor(n / 10)} entries): live heap ${(large.live / small.live).toFixed(2)}x, RSS ${(large.rss / small.rss).toFixed(2)}x`,
  );
}
