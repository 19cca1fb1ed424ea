import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureBuilt } from "../helpers/build.js";
import { bangerBin, bangerCli } from "../helpers/cli.js";
import { pushShellBase } from "../helpers/container-images.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { processesNaming, vmmPids } from "../helpers/procs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// `banger image build -f` as a user runs it: a Dockerfile FROM a busybox image in a real local
// registry (plain HTTP), built by the real Buildah through the CLI and the daemon, then booted
// once under TCG, offline (no --nat), to see what its RUN made and that its ENV and WORKDIR apply.
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
let registry: TestRegistry;
let context: string;
let base: string;
const { cli, ok } = bangerCli(() => home.env);

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-dfbuild-");
  registry = await startRegistry();
  base = await pushShellBase(registry);
  context = path.join(home.home, "app");
  await fs.mkdir(context);
  await fs.writeFile(
    path.join(context, "Dockerfile"),
    [
      `FROM ${base}`,
      "ARG FLAVOUR=plain",
      "ARG SIZE=small",
      "RUN echo built > /built.txt && echo $FLAVOUR $SIZE > /args.txt",
      "ENV GREETING=hello",
      "WORKDIR /srv",
      "",
    ].join("\n"),
  );
  await fs.writeFile(
    path.join(context, "Failing.Dockerfile"),
    [`FROM ${base}`, "RUN echo about to fail && ls /no-such-file", ""].join("\n"),
  );
});

after(async () => {
  await cleanupE2eHome(home, { extra: [() => registry?.stop()] });
});

/** No staging dir (buildah's storage lives in it) and no process of this home but its daemon. */
async function assertNoBuildLeft(): Promise<void> {
  const dirs = await fs.readdir(home.layout.imagesDir).catch(() => [] as string[]);
  assert.deepEqual(
    dirs.filter((d) => d.includes("staging")),
    [],
  );
  const buildah = await processesNaming(home.home, (argv0) => /buildah/.test(argv0));
  assert.deepEqual(buildah, [], "no buildah process is left");
}

test("piped, a failing RUN prints nothing but the error, which quotes RUN's output", async () => {
  const r = await cli(
    "image",
    "build",
    "-f",
    path.join(context, "Failing.Dockerfile"),
    "--name",
    "dffail",
    "--insecure-registry",
  );
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, "");
  assert.match(r.stderr, /^banger: error: the Dockerfile build failed/m);
  assert.match(r.stderr, /about to fail\n/);
  assert.match(r.stderr, /ls: \/no-such-file: No such file or directory/);
  assert.match(r.stderr, /hint: fix the step the output names/);
  const list = JSON.parse((await ok("image", "list", "--json")).stdout) as Array<{ name: string }>;
  assert.deepEqual(
    list.map((i) => i.name),
    [],
  );
  await assertNoBuildLeft();
});

/** Pids of live processes whose argv is exactly this. */
async function processesRunning(argv: string[]): Promise<number[]> {
  const want = `${argv.join("\0")}\0`;
  const found: number[] = [];
  for (const pid of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd === want) found.push(Number(pid));
  }
  return found;
}

/** Polls (bounded) until `check` holds; returns whether it did. */
async function until(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("Ctrl-C during RUN stops the build: RUN is killed, nothing is left", async () => {
  const file = path.join(context, "Sleepy.Dockerfile");
  await fs.writeFile(file, [`FROM ${base}`, "RUN sleep 319", ""].join("\n"));
  const child = spawn(
    bangerBin,
    ["image", "build", "-f", file, "--name", "dfsleepy", "--insecure-registry"],
    { env: home.env, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => resolve(code)),
  );
  try {
    assert.ok(
      await until(async () => (await processesRunning(["sleep", "319"])).length > 0, 60_000),
      `RUN never started: ${stderr}`,
    );
    child.kill("SIGINT");
    assert.notEqual(await exited, 0);
    assert.ok(
      await until(async () => (await processesRunning(["sleep", "319"])).length === 0, 30_000),
      "RUN's sleep outlived the cancelled build",
    );
    assert.ok(
      await until(
        async () =>
          (await fs.readdir(home.layout.imagesDir).catch(() => [] as string[])).length === 0,
        30_000,
      ),
      "the staging dir (buildah's storage) is removed",
    );
    await assertNoBuildLeft();
    assert.equal((await cli("image", "show", "dfsleepy")).code === 0, false);
  } finally {
    child.kill("SIGKILL");
    for (const pid of await processesRunning(["sleep", "319"])) process.kill(pid, "SIGKILL");
  }
});

test(
  "a Dockerfile FROM the test registry builds with image build -f; its RUN output, ENV and WORKDIR are seen in the VM",
  { timeout: 900_000 },
  async () => {
    const built = await ok(
      "image",
      "build",
      "-f",
      path.join(context, "Dockerfile"),
      context,
      "--name",
      "dfimg",
      "--insecure-registry",
      "--build-arg",
      "FLAVOUR=spicy",
      "--build-arg",
      "SIZE=large",
    );
    // Piped: the result line only, no progress.
    assert.match(built.stdout, /^image dfimg ready \(.*\); boot it with/);
    assert.doesNotMatch(built.stderr, /STEP/);
    await assertNoBuildLeft();
    const info = JSON.parse((await ok("image", "show", "dfimg", "--json")).stdout) as {
      source: string;
      init: string | null;
      config: { env: string[]; workingDir: string | null } | null;
    };
    assert.equal(info.source, `dockerfile:${path.join(context, "Dockerfile")}`);
    assert.equal(info.init, "/usr/lib/banger/init", "busybox has no init: banger's");
    // The config buildah wrote, kept like an imported archive's.
    assert.ok(info.config?.env.includes("GREETING=hello"), JSON.stringify(info.config));
    assert.equal(info.config?.workingDir, "/srv");

    // Boots the VM lane only now: the builds above boot nothing.
    await useSharedDefaultImage(home);
    await ok("vm", "create", "--image", "dfimg", "--name", "dfvm");
    try {
      const cat = await ok("vm", "ssh", "dfvm", "--", "cat", "/built.txt", "/args.txt");
      assert.equal(
        cat.stdout,
        "built\nspicy large\n",
        "RUN's output, with both --build-arg values",
      );
      // ENV and WORKDIR apply to what banger runs for the user.
      const envCwd = await ok("vm", "ssh", "dfvm", "--", "sh", "-c", "echo $GREETING; pwd");
      assert.equal(envCwd.stdout, "hello\n/srv\n");
    } finally {
      await cli("vm", "delete", "dfvm");
    }
    assert.deepEqual(await vmmPids(home.home), []);
  },
);
