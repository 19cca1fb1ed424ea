import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { catInImage } from "../src/disk/ext4.js";
import { makeImageBundle } from "../src/image/bundle.js";
import { EMPTY_CONFIG } from "../src/image/image-config.js";
import { ImageService, type OciPuller } from "../src/image/service.js";
import { KernelService } from "../src/kernel/service.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { packBundle } from "../src/util/bundle-pack.js";
import { startServer, type TestServer } from "./helpers/http-server.js";
import { makeLayer } from "./helpers/layer.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

const runner = createCommandRunner();
const noOci: OciPuller = {
  defaultName: () => "from-oci",
  fetchLayers: async () => {
    throw new BangerError(ErrorCode.NotFound, "fell through to OCI");
  },
};
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

let server: TestServer;
let home: TempLayout;
let store: Store;
let kernels: KernelService;
let images: ImageService;
let bundleBytes: Buffer;
const entries: object[] = [];

function publish(
  name: string,
  body: Buffer,
  over: { sha256?: string; truncateAt?: number } = {},
): void {
  server.routes.set(`/b/${name}.tar.zst`, {
    body,
    ...(over.truncateAt !== undefined ? { truncateAt: over.truncateAt } : {}),
  });
  entries.push({
    name,
    distro: "test",
    arch: "x86_64",
    kernel_ref: "catalog-kernel",
    tarball_url: `b/${name}.tar.zst`,
    tarball_sha256: over.sha256 ?? sha256(body),
    size_bytes: body.length,
    description: name,
  });
  server.routes.set("/images.json", { body: JSON.stringify({ version: 1, entries }) });
}

before(async () => {
  server = await startServer();
  home = await tempLayout("banger-icat-");
  store = Store.open(home.layout.dbFile);
  const env = { BANGER_IMAGE_CATALOG: `${server.url}/images.json` };
  kernels = new KernelService({ store, layout: home.layout, env, runner });
  images = new ImageService({ store, layout: home.layout, env, runner, kernels, oci: noOci });

  const tarFile = path.join(home.home, "rootfs.tar");
  await fs.writeFile(
    tarFile,
    await makeLayer(
      [
        { name: "etc/os-release", body: "ID=tiny\n" },
        { name: "bin/hello", body: "hi", mode: 0o755 },
      ],
      { gzip: false },
    ),
  );
  const bundle = await makeImageBundle({
    rootfsTar: tarFile,
    name: "tiny",
    distro: "test",
    arch: "x86_64",
    kernelRef: "manifest-kernel",
    sizeBytes: 64 * 1024 * 1024,
    outDir: path.join(home.home, "out"),
    runner,
  });
  assert.match(path.basename(bundle.path), /^tiny-[0-9a-f]{12}-x86_64\.tar\.zst$/);
  bundleBytes = await fs.readFile(bundle.path);
  assert.equal(bundle.sha256, sha256(bundleBytes));
  publish("tiny", bundleBytes);
  publish("tiny-badsum", bundleBytes, { sha256: "0".repeat(64) });
  publish("tiny-truncated", bundleBytes, { truncateAt: 1000 });
});

after(async () => {
  store.close();
  await server.close();
  await home.cleanup();
});

test("a catalog name pulls the bundle, takes the manifest's kernel, and registers it", async () => {
  const info = await images.pull({ ref: "tiny" });
  assert.equal(info.name, "tiny");
  assert.equal(info.kernel, "manifest-kernel", "manifest kernel_ref beats the catalog's");
  assert.equal(info.config, null, "a bundle made from a rootfs tar has no OCI config");
  assert.equal(await catInImage(runner, info.rootfsPath, "/etc/os-release"), "ID=tiny\n");
  assert.match(
    (await catInImage(runner, info.rootfsPath, "/etc/ssh/sshd_config.d/banger.conf")) ?? "",
    /PubkeyAuthentication yes/,
  );
  assert.deepEqual((await fs.readdir(path.dirname(info.rootfsPath))).sort(), [
    "manifest.json",
    "rootfs.ext4",
  ]);

  const renamed = await images.pull({ ref: "tiny", name: "tiny2", kernelRef: "flag-kernel" });
  assert.equal(renamed.kernel, "flag-kernel", "--kernel-ref beats the manifest");
});

test("a bundle's config goes through the rules an OCI config gets", async () => {
  const work = path.join(home.home, "cfg-bundle");
  await fs.mkdir(work);
  const src = await images.pull({ ref: "tiny", name: "tiny-src" });
  const manifest = path.join(work, "manifest.json");
  const config = { ...EMPTY_CONFIG, env: ["UID=0", "OK=1"], workingDir: '/a"b' };
  await fs.writeFile(manifest, JSON.stringify({ name: "tiny-cfg", kernel_ref: null, config }));
  const packed = await packBundle(
    [
      { name: "rootfs.ext4", from: src.rootfsPath },
      { name: "manifest.json", from: manifest },
    ],
    path.join(work, "out"),
    (sha) => `tiny-cfg-${sha.slice(0, 12)}.tar.zst`,
  );
  publish("tiny-cfg", await fs.readFile(packed.path));
  const info = await images.pull({ ref: "tiny-cfg" });
  assert.deepEqual(info.config?.env, ["OK=1"]);
  assert.equal(info.config?.workingDir, null);
  assert.match(info.config?.warnings.join("\n") ?? "", /Env UID dropped[^]*WorkingDir .* dropped/);
});

for (const [name, pattern] of [
  ["tiny-badsum", /sha256 mismatch/],
  ["tiny-truncated", /truncated or corrupt|bytes, the catalog says/],
] as const) {
  test(`a bad bundle (${name}) installs nothing`, async () => {
    await assert.rejects(images.pull({ ref: name }), pattern);
    assert.equal(store.getImageByName(name), null);
    const left = await fs.readdir(home.layout.imagesDir);
    assert.deepEqual(
      left.filter((f) => f.includes("staging")),
      [],
    );
  });
}

test("a name not in the catalog falls through to OCI", async () => {
  await assert.rejects(images.pull({ ref: "not-in-catalog" }), /fell through to OCI/);
});

test("register: exclusive kernel forms, ext4 check, loose kernel files; promote and delete", async () => {
  const src = (await store.getImageByName("tiny"))!.rootfsPath;
  const mine = path.join(home.home, "mine.ext4");
  await fs.copyFile(src, mine);

  await assert.rejects(
    images.register({ name: "r1", rootfs: mine, kernelRef: "k", kernel: "/boot/x" }),
    /mutually exclusive/,
  );
  await assert.rejects(images.register({ name: "r1", rootfs: mine }), /needs a kernel/);
  await assert.rejects(
    images.register({ name: "r1", rootfs: mine, kernelRef: "nope" }),
    /no kernel named "nope"/,
  );
  await assert.rejects(
    images.register({ name: "r1", rootfs: path.join(home.home, "rootfs.tar"), kernelRef: "x" }),
    /cannot register .*rootfs\.tar: it is too small \(\d+ bytes\) to be a filesystem/,
  );

  const kdir = path.join(home.home, "kfiles");
  await fs.mkdir(kdir);
  await fs.writeFile(path.join(kdir, "bzImage"), "kernel bytes");
  await fs.writeFile(path.join(kdir, "initrd"), "initrd bytes");
  const reg = await images.register({
    name: "r1",
    rootfs: mine,
    kernel: path.join(kdir, "bzImage"),
    initrd: path.join(kdir, "initrd"),
  });
  assert.equal(reg.managed, false);
  assert.equal(reg.rootfsPath, mine);
  assert.equal(reg.kernel, "r1-kernel");
  assert.equal((await kernels.show("r1-kernel")).files.initrd?.endsWith("initrd.img"), true);

  const promoted = await images.promote("r1");
  assert.equal(promoted.managed, true);
  assert.notEqual(promoted.rootfsPath, mine);
  assert.equal((await fs.stat(promoted.rootfsPath)).size, (await fs.stat(mine)).size);
  await assert.rejects(images.promote("r1"), /already managed/);

  const reg2 = await images.register({ name: "r2", rootfs: mine, kernelRef: "r1-kernel" });
  await images.delete("r2");
  await fs.access(mine); // an unmanaged image's file is the user's: never deleted
  assert.equal(store.getImageByName("r2"), null);
  void reg2;

  store.insertVm({
    id: "vm1",
    name: "uses-r1",
    imageId: promoted.id,
    kernelRef: null,
    vcpu: 1,
    memoryBytes: 1,
    diskBytes: 1,
    state: "stopped",
    nat: false,
    ip: null,
    mac: null,
    vmm: null,
    teardownJson: null,
    snapshotId: null,
    createdAt: "now",
    updatedAt: "now",
  });
  await assert.rejects(images.delete("r1"), /used by VM\(s\) uses-r1/);
  store.deleteVm("vm1");
  await images.delete("r1");
  await assert.rejects(fs.access(path.dirname(promoted.rootfsPath)));
});
