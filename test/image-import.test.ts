// `image import` of what skopeo writes (docker-archive, oci-archive, an oci: layout dir) from an
// image in Debian's real docker-registry on 127.0.0.1; the rootfs is read back with debugfs.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { Readable } from "node:stream";
import { withStdinSpool } from "../src/cli/stdin-spool.js";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import type { ImageService } from "../src/image/service.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { hostileDaemon, type HostileDaemon } from "./hostile/harness.js";
import { bangerBin } from "./helpers/cli.js";
import { makeLayer } from "./helpers/layer.js";
import { pushImage, startRegistry, type TestRegistry } from "./helpers/registry.js";
import { imageServices } from "./helpers/services.js";
import { skopeoSave, type ArchiveKind } from "./helpers/skopeo.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

const run = promisify(execFile);
const runner = createCommandRunner();
let registry: TestRegistry;
let home: TempLayout;
let store: Store;
let images: ImageService;
let work: string;
const saved = {} as Record<ArchiveKind, string>;

before(async () => {
  registry = await startRegistry();
  home = await tempLayout("banger-imptest-");
  store = Store.open(home.layout.dbFile);
  ({ images } = imageServices(store, home.layout, { runner }));
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-imparchives-"));
  const base = await makeLayer([
    { name: "etc/", type: "directory" },
    { name: "etc/os-release", body: "ID=importtest\n" },
    { name: "usr/bin/tool", body: "tool", mode: 0o4755 },
    { name: "old-file", body: "x" },
  ]);
  const top = await makeLayer(
    [
      { name: ".wh.old-file" },
      { name: "app/", type: "directory", uid: 1000, gid: 1000 },
      { name: "app/main.py", body: "print('hi')\n" },
    ],
    { gzip: false },
  );
  await pushImage(registry.url, "test/app", "v1", [base, top], {
    diffIds: true,
    config: {
      Env: ["PATH=/usr/local/bin:/usr/bin:/bin", "APP=1"],
      WorkingDir: "/app",
      Entrypoint: ["python3"],
      Cmd: ["main.py"],
      ExposedPorts: { "8000/tcp": {} },
      User: "1000:1000",
    },
  });
  for (const kind of ["docker-archive", "oci-archive", "oci"] as const) {
    saved[kind] = path.join(work, kind === "oci" ? "app-layout" : `app.${kind}.tar`);
    await skopeoSave(registry.host, "test/app", "v1", kind, saved[kind], work);
  }
});

after(async () => {
  store?.close();
  await registry?.stop();
  await home?.cleanup();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

async function assertAppRootfs(rootfs: string): Promise<void> {
  assert.equal(await catInImage(runner, rootfs, "/etc/os-release"), "ID=importtest\n");
  assert.equal(await catInImage(runner, rootfs, "/app/main.py"), "print('hi')\n");
  const tool = await statInImage(runner, rootfs, "/usr/bin/tool");
  assert.deepEqual([tool?.uid, tool?.mode], [0, 0o4755]);
  assert.equal((await statInImage(runner, rootfs, "/app"))?.uid, 1000);
  assert.equal(await statInImage(runner, rootfs, "/old-file"), null, "the whiteout applied");
}

async function assertNoWorkLeft(): Promise<void> {
  const dirs = await fsp.readdir(home.layout.imagesDir);
  assert.deepEqual(
    dirs.filter((d) => d.includes("staging")),
    [],
  );
  for (const d of dirs) {
    const inside = await fsp.readdir(path.join(home.layout.imagesDir, d));
    assert.deepEqual(inside.sort(), ["manifest.json", "rootfs.ext4"], d);
  }
}

for (const [kind, format] of [
  ["docker-archive", "docker-archive"],
  ["oci-archive", "oci"],
  ["oci", "oci"],
] as const) {
  test(`a ${kind} made by skopeo imports into an ext4 with the image's files`, async () => {
    const stages = new Set<string>();
    const name = `app-${kind}`;
    const info = await images.import({ path: saved[kind], name }, (p) => stages.add(p.stage));
    assert.equal(info.name, name);
    assert.equal(info.source, `${format}:${saved[kind]}`);
    assert.match(info.digest ?? "", /^sha256:[0-9a-f]{64}$/);
    assert.ok(stages.has("verify") && stages.has("ext4"), [...stages].join(","));
    await assertAppRootfs(info.rootfsPath);
    await assertNoWorkLeft();
    // The archive's verified config is kept: on the row (image show) and in manifest.json.
    const expected = {
      entrypoint: ["python3"],
      cmd: ["main.py"],
      env: ["PATH=/usr/local/bin:/usr/bin:/bin", "APP=1"],
      workingDir: "/app",
      exposedPorts: ["8000/tcp"],
      user: "1000:1000",
      warnings: [],
    };
    assert.deepEqual(info.config, expected);
    assert.deepEqual(images.show(name).config, expected);
    const manifest = JSON.parse(
      await fsp.readFile(path.join(path.dirname(info.rootfsPath), "manifest.json"), "utf8"),
    ) as { config?: unknown };
    assert.deepEqual(manifest.config, expected);
  });
}

test("the default name is the file's, without its archive extension", async () => {
  const info = await images.import({ path: saved["oci-archive"] });
  assert.equal(info.name, "app.oci-archive");
  await assert.rejects(
    images.import({ path: saved["oci-archive"] }),
    /an image named "app.oci-archive" already exists/,
  );
});

test("an OCI layout packed with 'tar -C dir .' (members ./, ./blobs/...) imports", async () => {
  const packed = path.join(work, "repacked.tar");
  await run("tar", ["-cf", packed, "-C", saved.oci, "."]);
  const info = await images.import({ path: packed });
  assert.equal(info.source, `oci:${packed}`);
  await assertAppRootfs(info.rootfsPath);
});

test("a gzip-compressed docker-archive (docker save | gzip) imports", async () => {
  const gz = path.join(work, "app-gz.tar.gz");
  const { createGzip } = await import("node:zlib");
  const { pipeline } = await import("node:stream/promises");
  await pipeline(
    fs.createReadStream(saved["docker-archive"]),
    createGzip(),
    fs.createWriteStream(gz),
  );
  const info = await images.import({ path: gz });
  assert.equal(info.name, "app-gz");
  await assertAppRootfs(info.rootfsPath);
});

test("a layout holding two tags is refused, naming them, and nothing is installed", async () => {
  const two = path.join(work, "two-tags");
  await fsp.cp(saved.oci, two, { recursive: true });
  const index = JSON.parse(await fsp.readFile(path.join(two, "index.json"), "utf8")) as {
    manifests: Array<{ annotations: Record<string, string> }>;
  };
  const second = structuredClone(index.manifests[0]!);
  second.annotations["org.opencontainers.image.ref.name"] = "v2";
  index.manifests.push(second);
  await fsp.writeFile(path.join(two, "index.json"), JSON.stringify(index));
  await assert.rejects(
    images.import({ path: two }),
    /lists 2 images without platforms \("v1", "v2"\)/,
  );
  assert.equal(store.getImageByName("two-tags"), null);
  await assertNoWorkLeft();
});

test("the CLI's stdin spool refuses a terminal, and a stdin that fails mid-way leaves no file", async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-impspool-"));
  try {
    const tty = Object.assign(Readable.from([]), { isTTY: true });
    await assert.rejects(
      withStdinSpool(path.join(dir, "imports"), tty, async () => assert.fail("not called")),
      /reads the archive from stdin, which is a terminal/,
    );
    let reads = 0;
    const broken = new Readable({
      read() {
        if (reads++ === 0) this.push(Buffer.alloc(4096));
        else this.destroy(new Error("connection reset"));
      },
    });
    await assert.rejects(
      withStdinSpool(path.join(dir, "imports"), broken, async () => assert.fail("not called")),
      /cannot read the archive from stdin: connection reset; nothing was imported/,
    );
    assert.deepEqual(await fsp.readdir(path.join(dir, "imports")), []);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

/** `banger image import - --name <name>` with `file` as its stdin, against a real daemon. */
async function importFromStdin(
  daemon: HostileDaemon,
  file: string,
  name: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const fd = fs.openSync(file, "r");
  try {
    const child = spawn(bangerBin, ["image", "import", "-", "--name", name], {
      env: daemon.env,
      stdio: [fd, "pipe", "pipe"],
      timeout: 120_000,
    });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    return { code, stdout, stderr };
  } finally {
    fs.closeSync(fd);
  }
}

test("an archive piped into 'image import -' imports, and its spool file is gone afterwards", async () => {
  const daemon = await hostileDaemon();
  try {
    const r = await importFromStdin(daemon, saved["docker-archive"], "from-stdin");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /image from-stdin ready/);
    const client = await daemon.connect();
    try {
      const info = (await client.call("image.show", { name: "from-stdin" })) as {
        source: string;
        rootfsPath: string;
      };
      assert.equal(info.source, "docker-archive:-");
      await assertAppRootfs(info.rootfsPath);
    } finally {
      client.close();
    }
    assert.deepEqual(
      await fsp.readdir(path.join(daemon.home.layout.stateDir, "imports")).catch(() => []),
      [],
    );
  } finally {
    await daemon.close();
  }
});
