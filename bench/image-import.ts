// Benchmark: `image pull` of a ~300 MB Debian rootfs from a local registry, against
// a baseline measured in the same run: `tar -x` of the same layer plus `mkfs.ext4 -d`.
// Prints both times and the ratio (target: banger <= 1.5x). Not a test: run `make bench`.
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { pushImage, startRegistry } from "../test/helpers/registry.js";
import { tempLayout } from "../test/helpers/temp-home.js";
import { imageServices } from "../test/helpers/services.js";

const work = await fs.mkdtemp(path.join(os.tmpdir(), "banger-bench-"));
const registry = await startRegistry();
const home = await tempLayout("banger-bench-home-");
const sbin = { ...process.env, PATH: `/usr/sbin:/sbin:${process.env.PATH}` };
try {
  const layer = path.join(work, "rootfs.tar");
  console.log("preparing a Debian rootfs with mmdebstrap ...");
  execFileSync(
    "mmdebstrap",
    ["--variant=minbase", "--include=systemd-sysv,openssh-server,git,curl", "bookworm", layer],
    { stdio: "ignore" },
  );
  const bytes = (await fs.stat(layer)).size;
  await pushImage(registry.url, "bench/debian", "v1", [await fs.readFile(layer)]);

  const t0 = performance.now();
  const tree = path.join(work, "tree");
  await fs.mkdir(tree);
  execFileSync("tar", ["-xf", layer, "-C", tree], { stdio: "ignore" });
  const image = path.join(work, "baseline.ext4");
  await fs.writeFile(image, "");
  await fs.truncate(image, Math.max(Math.ceil(bytes * 1.5), 1024 ** 3));
  execFileSync("mkfs.ext4", ["-F", "-q", "-d", tree, image], { stdio: "ignore", env: sbin });
  const baseline = (performance.now() - t0) / 1000;

  const store = Store.open(home.layout.dbFile);
  const runner = createCommandRunner();
  const { images } = imageServices(store, home.layout, { runner });
  const t1 = performance.now();
  const stageTimes: string[] = [];
  let last = t1;
  let lastStage = "";
  await images.pull({ ref: `${registry.host}/bench/debian:v1` }, (p) => {
    if (p.stage === lastStage) return;
    const now = performance.now();
    if (lastStage) stageTimes.push(`${lastStage} ${((now - last) / 1000).toFixed(2)}s`);
    last = now;
    lastStage = p.stage;
  });
  stageTimes.push(`${lastStage} ${((performance.now() - last) / 1000).toFixed(2)}s`);
  const banger = (performance.now() - t1) / 1000;
  store.close();

  console.log(`layer: ${(bytes / 2 ** 20).toFixed(0)} MiB`);
  console.log(`baseline (tar -x + mkfs.ext4 -d): ${baseline.toFixed(2)} s`);
  console.log(
    `banger image pull (download, verify, flatten, ext4, ownership): ${banger.toFixed(2)} s`,
  );
  console.log(`  stages: ${stageTimes.join(", ")}`);
  console.log(`ratio: ${(banger / baseline).toFixed(2)}x (target <= 1.50x)`);
} finally {
  await registry.stop();
  await home.cleanup();
  await fs.rm(work, { recursive: true, force: true });
}
