// `image build -f` through the real Buildah, FROM a busybox image in Debian's real docker-registry
// on 127.0.0.1 (plain HTTP); the rootfs is read back with debugfs. No VM boots here:
// test/e2e/dockerfile-build.test.ts boots one.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { catInImage } from "../src/disk/ext4.js";
import { rootlessProblem } from "../src/image/build/buildah.js";
import { ImageService } from "../src/image/service.js";
import { KernelService } from "../src/kernel/service.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { pushShellBase } from "./helpers/container-images.js";
import { processesNaming } from "./helpers/procs.js";
import { startRegistry, type TestRegistry } from "./helpers/registry.js";
import { imageServices, noOci } from "./helpers/services.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

const runner = createCommandRunner();
let registry: TestRegistry;
let home: TempLayout;
let store: Store;
let images: ImageService;
let work: string;
let base: string;

before(async () => {
  registry = await startRegistry();
  base = await pushShellBase(registry);
  home = await tempLayout("banger-dftest-");
  store = Store.open(home.layout.dbFile);
  ({ images } = imageServices(store, home.layout, { runner }));
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-dfctx-"));
});

after(async () => {
  store?.close();
  await registry?.stop();
  await home?.cleanup();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

/** A context directory holding a Dockerfile with these lines after its FROM; returns its path. */
async function dockerfile(name: string, lines: string[], files: Record<string, string> = {}) {
  const dir = path.join(work, name);
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(dir, "Dockerfile"), [`FROM ${base}`, ...lines, ""].join("\n"));
  for (const [f, body] of Object.entries(files)) await fsp.writeFile(path.join(dir, f), body);
  return path.join(dir, "Dockerfile");
}

/** No staging dir, no buildah storage, no buildah process, no temp file of buildah's. */
async function assertNothingLeft(tmpBefore: string[]): Promise<void> {
  const dirs = await fsp.readdir(home.layout.imagesDir).catch(() => [] as string[]);
  assert.deepEqual(
    dirs.filter((d) => d.includes("staging")),
    [],
    "the staging dir (and buildah's storage in it) is gone",
  );
  for (const d of dirs)
    assert.deepEqual((await fsp.readdir(path.join(home.layout.imagesDir, d))).sort(), [
      "manifest.json",
      "rootfs.ext4",
    ]);
  assert.deepEqual(await processesNaming(home.home), [], "no buildah process is left");
  assert.deepEqual(await buildahTemp(), tmpBefore, "buildah left nothing in /var/tmp");
}

const buildahTemp = async () =>
  (await fsp.readdir("/var/tmp").catch(() => [] as string[]))
    .filter((f) => f.startsWith("buildah"))
    .sort();

test(
  "a Dockerfile with RUN, ENV, WORKDIR, COPY and ARG builds into an ext4 with what RUN made",
  { timeout: 300_000 },
  async () => {
    const tmpBefore = await buildahTemp();
    const file = await dockerfile(
      "ok",
      [
        "ARG FLAVOUR=plain",
        "RUN echo built > /built.txt && echo $FLAVOUR > /flavour.txt",
        "ENV GREETING=hello",
        "WORKDIR /srv",
        "COPY note.txt /srv/note.txt",
      ],
      { "note.txt": "from the context\n" },
    );
    const lines: string[] = [];
    const info = await images.buildDockerfile(
      {
        name: "df-ok",
        file,
        buildArgs: ["FLAVOUR=spicy"],
        insecureRegistry: true,
      },
      (p) => {
        if (p.stage === "build" && p.message) lines.push(p.message);
      },
    );
    assert.equal(info.name, "df-ok");
    assert.equal(info.source, `dockerfile:${file}`);
    assert.equal(info.init, "/usr/lib/banger/init", "finalised like any image without an init");
    // The config is the one buildah wrote: the base's (none) plus the Dockerfile's ENV and WORKDIR.
    assert.deepEqual(info.config?.env, [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "GREETING=hello",
    ]);
    assert.equal(info.config?.workingDir, "/srv");
    assert.deepEqual(info.config?.warnings, []);
    assert.equal(await catInImage(runner, info.rootfsPath, "/built.txt"), "built\n");
    assert.equal(await catInImage(runner, info.rootfsPath, "/flavour.txt"), "spicy\n");
    assert.equal(await catInImage(runner, info.rootfsPath, "/srv/note.txt"), "from the context\n");
    assert.ok(
      lines.some((l) => /STEP \d\/\d: RUN echo built/.test(l)),
      `buildah's steps stream as progress: ${lines.join(" | ")}`,
    );
    await assertNothingLeft(tmpBefore);
  },
);

test(
  "a failing RUN is an error quoting its output, escaped and bounded; nothing is left",
  { timeout: 300_000 },
  async () => {
    const tmpBefore = await buildahTemp();
    const file = await dockerfile("fails", [
      "RUN i=0; while [ $i -lt 200 ]; do echo out-$i; i=$((i+1)); done; " +
        "printf 'about to fail \\033[31m\\n'; ls /no-such-file",
    ]);
    await assert.rejects(
      images.buildDockerfile({ name: "df-fails", file, insecureRegistry: true }),
      (err: unknown) => {
        assert.ok(err instanceof BangerError);
        assert.match(err.message, /^the Dockerfile build failed \(buildah exited with status 1\)/);
        assert.match(err.message, /about to fail \\x1b\[31m/, "RUN's output, its ESC escaped");
        // stdout's end and stderr's, each kept whatever order the two pipes were read in.
        assert.match(err.message, /; its output ended:\n(.*\n)*out-199\n/);
        assert.match(
          err.message,
          /\nand its errors:\n(.*\n)*ls: \/no-such-file: No such file or directory/,
        );
        assert.match(err.message, /Error: building at STEP/);
        assert.match(err.hint ?? "", /fix the step the output names/);
        assert.doesNotMatch(err.message, /\x1b/);
        assert.match(err.message, /out-199\n/);
        assert.doesNotMatch(err.message, /out-10\b/, "only the last lines");
        assert.ok(err.message.length < 5000, `${err.message.length} chars`);
        return true;
      },
    );
    assert.equal(store.getImageByName("df-fails"), null);
    await assertNothingLeft(tmpBefore);
  },
);

test("a build cancelled during RUN kills it and leaves nothing", { timeout: 300_000 }, async () => {
  const tmpBefore = await buildahTemp();
  const file = await dockerfile("cancel", [`RUN echo started && sleep 317; : ${home.home}/mark`]);
  const abort = new AbortController();
  await assert.rejects(
    images.buildDockerfile(
      { name: "df-cancel", file, insecureRegistry: true },
      (p) => {
        if (p.message === "started") abort.abort();
      },
      abort.signal,
    ),
    (err: unknown) => err instanceof BangerError && err.code === ErrorCode.Cancelled,
  );
  const sleeping = [];
  for (const pid of await fsp.readdir("/proc")) {
    const cmd = await fsp.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
    if (cmd === "sleep\u0000317\u0000") sleeping.push(pid);
  }
  assert.deepEqual(sleeping, [], "RUN's sleep was killed with buildah");
  await assertNothingLeft(tmpBefore);
});

test("bad input is refused up front with what to do", { timeout: 300_000 }, async () => {
  const file = await dockerfile("refusals", ["RUN true"]);
  // A FIFO as the Dockerfile is refused by its type, never opened: it cannot block the daemon.
  const fifo = path.join(work, "refusals", "fifo");
  await promisify(execFile)("mkfifo", [fifo]);
  const refusals: Array<[Parameters<ImageService["buildDockerfile"]>[0], RegExp]> = [
    [
      { name: "x1", file: path.join(work, "missing", "Dockerfile") },
      /Dockerfile .* does not exist/,
    ],
    [{ name: "x2", file: path.dirname(file) }, /is a directory, not a regular file/],
    [{ name: "x3", file, context: file }, /build context .* is not a directory/],
    [{ name: "x4", file: "Dockerfile" }, /is not an absolute path/],
    [{ name: "Bad Name", file }, /invalid image name/],
    [{ name: "x5", file, buildArgs: ["no-equals"] }, /invalid --build-arg/],
    [{ name: "x6", file: fifo }, /is a FIFO \(named pipe\), not a regular file/],
    [{ name: "x7", file, context: fifo }, /build context .* is not a directory/],
  ];
  for (const [req, message] of refusals) {
    await assert.rejects(images.buildDockerfile(req), (err: unknown) => {
      assert.ok(err instanceof BangerError, String(err));
      assert.match(err.message, message);
      assert.ok(err.hint, `a hint for ${err.message}`);
      return true;
    });
  }
  assert.deepEqual(
    (await fsp.readdir(home.layout.imagesDir).catch(() => [] as string[])).filter((d) =>
      d.includes("staging"),
    ),
    [],
  );
});

test(
  "FROM a plain-HTTP registry without --insecure-registry: the hint says to pass it; a missing tag is not the Dockerfile's fault",
  { timeout: 300_000 },
  async () => {
    const file = await dockerfile("http", ["RUN true"]);
    await assert.rejects(images.buildDockerfile({ name: "df-http", file }), (err: unknown) => {
      assert.ok(err instanceof BangerError);
      assert.match(err.message, /server gave HTTP response to HTTPS client/);
      assert.match(err.hint ?? "", /pass --insecure-registry/);
      return true;
    });
    const missing = path.join(work, "missing-tag");
    await fsp.mkdir(missing);
    await fsp.writeFile(path.join(missing, "Dockerfile"), `FROM ${registry.host}/test/base:nope\n`);
    await assert.rejects(
      images.buildDockerfile({
        name: "df-missing",
        file: path.join(missing, "Dockerfile"),
        insecureRegistry: true,
      }),
      (err: unknown) => {
        assert.ok(err instanceof BangerError);
        assert.match(err.hint ?? "", /FROM's image could not be fetched/);
        return true;
      },
    );
  },
);

test("a taken name is refused before buildah runs", { timeout: 300_000 }, async () => {
  const file = await dockerfile("taken", ["RUN true"]);
  await images.buildDockerfile({ name: "df-taken", file, insecureRegistry: true });
  await assert.rejects(
    images.buildDockerfile({ name: "df-taken", file, insecureRegistry: true }),
    /an image named "df-taken" already exists/,
  );
});

test(
  "without buildah on PATH the error names the package to install, and nothing is made",
  { timeout: 300_000 },
  async () => {
    const layout = (await tempLayout("banger-dfnobuildah-")).layout;
    const bare = Store.open(layout.dbFile);
    try {
      const { images: noBuildah } = imageServices(bare, layout, {
        runner: createCommandRunner({ PATH: "/nonexistent" }),
      });
      const file = await dockerfile("nobuildah", ["RUN true"]);
      await assert.rejects(
        noBuildah.buildDockerfile({ name: "df-nobuildah", file }),
        (err: unknown) =>
          err instanceof BangerError &&
          err.code === ErrorCode.Precondition &&
          /needs Buildah/.test(err.message) &&
          /apt-get install buildah/.test(err.hint ?? ""),
      );
      assert.deepEqual(await fsp.readdir(layout.imagesDir).catch(() => []), []);
    } finally {
      bare.close();
      await fsp.rm(path.dirname(layout.stateDir), { recursive: true, force: true });
    }
  },
);

test("rootless builds need subordinate ids: which file lacks a range for the user, by name or uid", () => {
  const user = { name: "ann", uid: 1000 };
  const ok = "ann:100000:65536\n";
  assert.equal(rootlessProblem(user, { subuid: ok, subgid: ok }), null);
  assert.equal(
    rootlessProblem(user, { subuid: "1000:100000:65536\n", subgid: " ann:165536:65536 \n" }),
    null,
  );
  assert.match(
    rootlessProblem(user, { subuid: "bob:100000:65536\n", subgid: ok }) ?? "",
    /\/etc\/subuid has no range for ann$/,
  );
  assert.match(
    rootlessProblem(user, { subuid: "", subgid: "ann:100000:0\nann:x:5\n" }) ?? "",
    /\/etc\/subuid and \/etc\/subgid have no range for ann$/,
  );
});

test("a daemon that is not root is refused up front when its user has no subordinate ids", async (t) => {
  const user = { name: os.userInfo().username, uid: process.getuid?.() ?? 0 };
  const read = (f: string) => fsp.readFile(f, "utf8").catch(() => "");
  const files = { subuid: await read("/etc/subuid"), subgid: await read("/etc/subgid") };
  if (rootlessProblem(user, files) === null) {
    t.skip(`${user.name} has subordinate ids on this machine: a rootless build would run`);
    return;
  }
  const rootless = new ImageService({
    store,
    layout: home.layout,
    env: {},
    runner,
    kernels: new KernelService({ store, layout: home.layout, env: {}, runner }),
    oci: noOci,
    isRoot: false,
  });
  const file = await dockerfile("rootless", ["RUN true"]);
  await assert.rejects(
    rootless.buildDockerfile({ name: "df-rootless", file, insecureRegistry: true }),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.Precondition &&
      /runs Buildah rootless/.test(err.message) &&
      /usermod --add-subuids/.test(err.hint ?? ""),
  );
  assert.equal(store.getImageByName("df-rootless"), null);
});
