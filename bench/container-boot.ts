// Benchmark: cold boot to SSH (`banger vm create`) of a Debian minbase container image (no
// systemd, no sshd: banger's init and dropbear) against the default systemd + OpenSSH image,
// interleaved in one run; prints the ratio of the medians (target <= 1.0x: there is no systemd
// to start). Also prints what banger's guest toolkit adds to every image (target < 5 MiB).
// Not a test: run `make bench` (or this file alone; BANGER_TEST_SHARED reuses a built kernel and image).
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { hostToolkit } from "../src/guest/toolkit.js";
import { createCommandRunner } from "../src/system/runner.js";
import { deleteEveryVm } from "../test/helpers/cli.js";
import { pushContainerImages } from "../test/helpers/container-images.js";
import { startRegistry } from "../test/helpers/registry.js";
import { useSharedDefaultImage } from "../test/helpers/shared-image.js";
import { tempLayout } from "../test/helpers/temp-home.js";

const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const banger = path.join(root, "bin", "banger");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const home = await tempLayout("banger-bench-cimg-");
const env = { ...home.env, BANGER_NETWORK: "user" };
const registry = await startRegistry();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const shape = ["--memory", "1G", "--vcpu", "1", "--disk-size", "1G"];

try {
  let bytes = 0;
  const toolkit = (await hostToolkit(createCommandRunner())).files;
  for (const f of toolkit) bytes += (await fs.stat(f.source)).size;
  console.log(
    `guest toolkit: ${toolkit.length} files, ${(bytes / 2 ** 20).toFixed(2)} MiB added to every image (target < 5 MiB)`,
  );

  console.log("preparing the images (minbase from mmdebstrap, the default kernel and image) ...");
  const refs = await pushContainerImages(registry, home.home);
  await run(banger, ["image", "pull", refs.minbase, "--name", "debmin"], { env });
  await useSharedDefaultImage(home);
  // Builds the default kernel and image when no shared ones were given; not timed.
  await run(banger, ["vm", "create", "--name", "warm", "--no-start", ...shape], { env });
  await run(banger, ["vm", "delete", "warm"], { env });

  const times: Record<"default" | "minbase", number[]> = { default: [], minbase: [] };
  for (let i = 0; i < ROUNDS; i++) {
    for (const [kind, image] of [
      ["default", "debian-bookworm"],
      ["minbase", "debmin"],
    ] as const) {
      const t = performance.now();
      await run(
        banger,
        ["vm", "create", "--cold", "--name", `${kind}${i}`, "--image", image, ...shape],
        {
          env,
        },
      );
      times[kind].push((performance.now() - t) / 1000);
      await run(banger, ["vm", "delete", `${kind}${i}`], { env });
    }
  }
  const d = median(times.default);
  const m = median(times.minbase);
  console.log(
    `cold boot to SSH, median of ${ROUNDS}: default image ${d.toFixed(1)} s, minbase container image ${m.toFixed(1)} s, ratio ${(m / d).toFixed(2)}x (target <= 1.0x)`,
  );
  console.log(
    `  runs: default ${times.default.map((x) => x.toFixed(1)).join(" ")}; minbase ${times.minbase.map((x) => x.toFixed(1)).join(" ")}`,
  );
} finally {
  await deleteEveryVm(env).catch(() => undefined);
  await run(banger, ["daemon", "stop"], { env }).catch(() => undefined);
  await registry.stop();
  await home.cleanup();
}
