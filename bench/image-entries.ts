// Benchmark: peak memory of finalising a layer with many small entries (the daemon once grew to
// 877 MB on a 200k-entry layer). Runs finaliseImage in this process and prints the peak RSS for
// N entries and for N/10, so a flat profile shows as a ratio near 1. Not a test: run `make bench`.
// Usage: node --import tsx bench/image-entries.ts [entries=200000]
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import tar from "tar-stream";

const n = Number(process.argv[2] ?? 200_000);

async function layer(file: string, count: number): Promise<void> {
  const pack = tar.pack();
  const out = (await fs.open(file, "w")).createWriteStream();
  const done = new Promise<void>((resolve) => out.on("finish", () => resolve()));
  pack.pipe(out);
  for (let i = 0; i < count; i++) {
    const dir = `d${Math.floor(i / 1000)}`;
    if (i % 1000 === 0) pack.entry({ name: `${dir}/`, type: "directory", mode: 0o755 });
    // Non-root owners: every entry needs its ownership re-applied, the worst case for metadata.
    pack.entry({ name: `${dir}/f${i}`, mode: 0o644, uid: 1000, gid: 1000 }, "x");
  }
  pack.finalize();
  await done;
}

if (process.env.BENCH_CHILD) {
  const { finaliseImage } = await import("../src/image/finalise.js");
  const { createCommandRunner } = await import("../src/system/runner.js");
  const staging = process.env.BENCH_CHILD;
  const t0 = performance.now();
  const result = await finaliseImage({
    layers: [path.join(staging, "layer.tar")],
    stagingDir: staging,
    runner: createCommandRunner(),
  });
  const secs = (performance.now() - t0) / 1000;
  console.log(
    JSON.stringify({ files: result.files, secs, maxRssKiB: process.resourceUsage().maxRSS }),
  );
} else {
  const results: Array<{ count: number; rss: number; secs: number }> = [];
  for (const count of [Math.floor(n / 10), n]) {
    const staging = await fs.mkdtemp(path.join(os.tmpdir(), "banger-bench-entries-"));
    try {
      await layer(path.join(staging, "layer.tar"), count);
      // BENCH_HEAP=<MiB> caps V8's heap: what is live, rather than garbage not yet collected.
      const heap = process.env.BENCH_HEAP ? [`--max-old-space-size=${process.env.BENCH_HEAP}`] : [];
      const out = execFileSync(
        process.execPath,
        [...heap, "--import", "tsx", import.meta.filename],
        {
          env: { ...process.env, BENCH_CHILD: staging },
          encoding: "utf8",
        },
      );
      const r = JSON.parse(out.trim().split("\n").at(-1)!) as { secs: number; maxRssKiB: number };
      results.push({ count, rss: r.maxRssKiB / 1024, secs: r.secs });
    } finally {
      await fs.rm(staging, { recursive: true, force: true });
    }
  }
  for (const r of results)
    console.log(`${r.count} entries: peak RSS ${r.rss.toFixed(0)} MiB, ${r.secs.toFixed(1)} s`);
  console.log(
    `ratio (peak RSS, ${n} vs ${Math.floor(n / 10)} entries): ${(results[1]!.rss / results[0]!.rss).toFixed(2)}x`,
  );
}
