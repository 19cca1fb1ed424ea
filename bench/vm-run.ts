// Benchmark: `banger vm run` against baselines measured in the same run.
// 1. `vm run --rm --cold -- true` against the same job done by hand: `vm create --cold`,
//    `vm ssh -- true`, `vm delete`. Target: <= 1.05x (orchestration adds nothing).
// 2. `vm workspace prepare` of a generated repo (2,000 files, ~40 MiB, plus as
//    much again in .git) against `tar -c . | ssh tar -x` of the same tree into the
//    same VM. Target: <= 1.5x (prepare also lists files, stages, swaps and
//    records the base).
// Not a test: run `make bench`.
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { connectOrStart } from "../src/cli/client.js";
import { endpointSshArgs } from "../src/guest/ssh.js";
import { bangerBin as banger, deleteEveryVm } from "../test/helpers/cli.js";
import { useSharedDefaultImage } from "../test/helpers/shared-image.js";
import { tempLayout } from "../test/helpers/temp-home.js";

const run = promisify(execFile);
const home = await tempLayout("banger-bench-run-");
const env = home.env;
const b = (...args: string[]) =>
  run(banger, args, { env, timeout: 600_000, maxBuffer: 64 * 2 ** 20 });

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

try {
  await fs.mkdir(path.dirname(home.layout.configFile), { recursive: true });
  await fs.writeFile(home.layout.configFile, '[vm_defaults]\ndisk_size = "2G"\n');
  console.log("preparing the default kernel and image ...");
  await useSharedDefaultImage(home);
  // Build kernel and image (when not shared) outside the measurement.
  await b("vm", "create", "--name", "warm", "--no-start");
  await b("vm", "delete", "warm");

  const byHand = await timed(async () => {
    await b("vm", "create", "--cold", "--name", "hand");
    await b("vm", "ssh", "hand", "--", "true");
    await b("vm", "delete", "hand");
  });
  const viaRun = await timed(() =>
    b("vm", "run", "--rm", "--cold", "--name", "auto", "--", "true"),
  );
  console.log(
    `vm run --rm -- true: ${viaRun.toFixed(1)} s; by hand (create, ssh, delete): ${byHand.toFixed(1)} s; ratio ${(viaRun / byHand).toFixed(2)}x (target <= 1.05x)`,
  );

  // A repo of 2,000 files in 20 dirs, ~40 MiB of incompressible data, one commit.
  const repo = path.join(home.home, "bench-repo");
  for (let d = 0; d < 20; d++) {
    await fs.mkdir(path.join(repo, `dir${d}`), { recursive: true });
    for (let f = 0; f < 100; f++) {
      await fs.writeFile(path.join(repo, `dir${d}`, `file${f}.bin`), randomBytes(20 * 1024));
    }
  }
  await run("git", ["init", "-q", repo]);
  await run("git", ["-C", repo, "add", "-A"]);
  await run("git", ["-C", repo, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "x"]);
  await b("vm", "create", "--name", "ws");
  const sshArgs = await sshArgsFor("ws");
  // The same bytes prepare sends: the work tree and .git (nothing here is ignored).
  const byTar = (round: number) =>
    timed(
      () =>
        new Promise<void>((resolve, reject) => {
          const tar = spawn("tar", ["-C", repo, "-cf", "-", "."]);
          const ssh = spawn(
            "ssh",
            [...sshArgs, `mkdir -p /root/baseline${round} && tar -x -C /root/baseline${round}`],
            { stdio: ["pipe", "ignore", "inherit"] },
          );
          tar.stdout.pipe(ssh.stdin);
          ssh.on("error", reject);
          ssh.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`ssh ${code}`))));
        }),
    );
  // Alternate, three rounds each: guest disk and page cache favour whichever runs first.
  const baselines: number[] = [];
  const prepares: number[] = [];
  for (let round = 0; round < 3; round++) {
    baselines.push(await byTar(round));
    prepares.push(await timed(() => b("vm", "workspace", "prepare", "ws", repo)));
  }
  const median = (xs: number[]) => [...xs].sort((a, c) => a - c)[1]!;
  const [prepare, baseline] = [median(prepares), median(baselines)];
  console.log(
    `workspace prepare (2,000 files, 40 MiB + .git), median of 3: ${prepare.toFixed(1)} s; tar -c . | ssh tar -x: ${baseline.toFixed(1)} s; ratio ${(prepare / baseline).toFixed(2)}x (target <= 1.5x)`,
  );
  await b("vm", "delete", "ws");
} finally {
  await deleteEveryVm(env).catch(() => undefined);
  await b("daemon", "stop").catch(() => undefined);
  await home.cleanup();
}

/** OpenSSH arguments for a VM, the way `banger vm ssh` builds them, from the daemon's vm.ssh answer. */
async function sshArgsFor(name: string): Promise<string[]> {
  const client = await connectOrStart({ layout: home.layout, env, notice: () => {} });
  try {
    const t = await client.call("vm.ssh", { name });
    return endpointSshArgs(name, t, ["-o", "BatchMode=yes"]);
  } finally {
    client.close();
  }
}
