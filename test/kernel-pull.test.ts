import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import tar from "tar-stream";
import { compress } from "zstd-napi";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { makeKernelBundle } from "../src/kernel/bundle.js";
import { findCatalogEntry, parseKernelCatalog } from "../src/kernel/catalog.js";
import { KernelService } from "../src/kernel/service.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { startServer, type TestServer } from "./helpers/http-server.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

interface RawEntry {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "fifo" | "character-device";
  body?: string;
  linkname?: string;
}

/** A .tar.zst built member by member, so tests can make hostile bundles. */
async function rawBundle(entries: RawEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    const type = e.type ?? "file";
    const header = {
      name: e.name,
      type,
      mode: type === "directory" ? 0o755 : 0o644,
      ...(e.linkname ? { linkname: e.linkname } : {}),
    };
    if (type === "file")
      pack.entry({ ...header, size: Buffer.byteLength(e.body ?? "") }, e.body ?? "");
    else pack.entry({ ...header, size: 0 }, "");
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return compress(Buffer.concat(chunks));
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

let server: TestServer;
let home: TempLayout;
let store: Store;
let service: KernelService;
const catalogEntries: object[] = [];

function addBundle(
  name: string,
  body: Buffer,
  over: { sha256?: string; size?: number; truncateAt?: number; url?: string } = {},
): void {
  server.routes.set(`/bundles/${name}.tar.zst`, {
    body,
    ...(over.truncateAt !== undefined ? { truncateAt: over.truncateAt } : {}),
  });
  catalogEntries.push({
    name,
    distro: "test",
    arch: "x86_64",
    kernel_version: "6.1.0-test",
    tarball_url: over.url ?? `bundles/${name}.tar.zst`,
    tarball_sha256: over.sha256 ?? sha256(body),
    size_bytes: over.size ?? body.length,
    description: `test kernel ${name}`,
  });
  server.routes.set("/catalog.json", {
    body: JSON.stringify({ version: 1, entries: catalogEntries }),
  });
}

before(async () => {
  server = await startServer();
  home = await tempLayout("banger-kpull-");
  store = Store.open(home.layout.dbFile);
  service = new KernelService({
    store,
    layout: home.layout,
    env: { BANGER_KERNEL_CATALOG: `${server.url}/catalog.json` },
    runner: createCommandRunner(),
  });

  // A real bundle made by our own packer from a kernel dir on disk.
  const src = path.join(home.home, "src-kernel");
  await fs.mkdir(path.join(src, "modules", "6.1.0-test", "kernel"), { recursive: true });
  await fs.writeFile(path.join(src, "vmlinuz-6.1.0-test"), "not really a kernel, but bytes");
  await fs.writeFile(path.join(src, "initrd.img-6.1.0-test"), "initrd bytes");
  await fs.writeFile(path.join(src, "modules", "6.1.0-test", "kernel", "virtio.ko"), "ko");
  await fs.symlink(
    "/lib/modules/6.1.0-test/build",
    path.join(src, "modules", "6.1.0-test", "build"),
  );
  const good = await makeKernelBundle(src, path.join(home.home, "out"), { name: "good" });
  assert.match(path.basename(good.path), /^good-[0-9a-f]{12}-x86_64\.tar\.zst$/);
  const goodBytes = await fs.readFile(good.path);
  assert.equal(good.sha256, sha256(goodBytes));
  addBundle("good", goodBytes);

  addBundle("badsum", goodBytes, { sha256: "0".repeat(64) });
  addBundle("truncated", goodBytes, { truncateAt: Math.floor(goodBytes.length / 2) });
  addBundle("missing", goodBytes, { url: "bundles/does-not-exist.tar.zst" });
  addBundle(
    "traversal",
    await rawBundle([
      { name: "vmlinuz", body: "k" },
      { name: "modules/../../evil", body: "x" },
    ]),
  );
  addBundle(
    "escape",
    await rawBundle([
      { name: "vmlinuz", body: "k" },
      { name: "modules/link", type: "symlink", linkname: "../../../etc" },
    ]),
  );
  addBundle(
    "through-link",
    await rawBundle([
      { name: "vmlinuz", body: "k" },
      { name: "modules/abs", type: "symlink", linkname: "/etc" },
      { name: "modules/abs/passwd", body: "owned" },
    ]),
  );
  addBundle("nokernel", await rawBundle([{ name: "initrd.img", body: "i" }]));
  addBundle(
    "extras",
    await rawBundle([
      { name: "./vmlinux", body: "\u007fELF" },
      { name: "etc/passwd", body: "not kept" },
      { name: "modules/fifo", type: "fifo" },
      { name: "modules/abs", type: "symlink", linkname: "/lib/modules" },
    ]),
  );
});

after(async () => {
  store.close();
  await server.close();
  await home.cleanup();
});

/** After a failed pull nothing may remain: no kernel dir, no staging dir, no row. */
async function assertNothingLeft(name: string): Promise<void> {
  const left = await fs.readdir(home.layout.kernelsDir).catch(() => []);
  assert.deepEqual(
    left.filter((f) => f.startsWith(name)),
    [],
    `nothing of ${name} left in kernels/`,
  );
  assert.equal(store.getKernel(name), null);
}

test("catalog: parse, lookup, relative URLs resolve against the catalog", () => {
  const catalog = parseKernelCatalog(
    JSON.stringify({
      version: 1,
      entries: [
        {
          name: "k1",
          distro: "d",
          arch: "x86_64",
          kernel_version: "6",
          tarball_url: "b/k1.tar.zst",
          tarball_sha256: "a".repeat(64),
          size_bytes: 3,
          description: "",
        },
      ],
    }),
    "http://example.test/cat/catalog.json",
  );
  assert.equal(
    findCatalogEntry(catalog, "k1")?.tarball_url,
    "http://example.test/cat/b/k1.tar.zst",
  );
  assert.equal(findCatalogEntry(catalog, "nope"), null);
  const local = parseKernelCatalog(
    JSON.stringify({
      version: 1,
      entries: [
        {
          name: "k2",
          distro: "d",
          arch: "x",
          kernel_version: "6",
          tarball_url: "k2.tar.zst",
          tarball_sha256: "b".repeat(64),
          size_bytes: 1,
          description: "",
        },
      ],
    }),
    "/srv/catalog.json",
  );
  assert.equal(local.entries[0]!.tarball_url, "/srv/k2.tar.zst");
});

test("catalog: invalid catalogs are rejected with the reason", () => {
  assert.throws(() => parseKernelCatalog("{", "c.json"), /not valid JSON/);
  assert.throws(
    () => parseKernelCatalog(JSON.stringify({ version: 2, entries: [] }), "c.json"),
    /invalid/,
  );
  const entry = {
    name: "k",
    distro: "d",
    arch: "x",
    kernel_version: "6",
    tarball_url: "u",
    tarball_sha256: "short",
    size_bytes: 1,
    description: "",
  };
  assert.throws(
    () => parseKernelCatalog(JSON.stringify({ version: 1, entries: [entry] }), "c.json"),
    /64 hex digits/,
  );
  const ok = { ...entry, tarball_sha256: "c".repeat(64) };
  assert.throws(
    () => parseKernelCatalog(JSON.stringify({ version: 1, entries: [ok, ok] }), "c.json"),
    /lists "k" twice/,
  );
});

test("pull: a real bundle over HTTP is verified, extracted and registered", async () => {
  const seen: number[] = [];
  const info = await service.pull("good", {
    progress: (p) => p.current !== undefined && seen.push(p.current),
  });
  assert.equal(info.name, "good");
  assert.equal(info.version, "6.1.0-test");
  const dir = path.join(home.layout.kernelsDir, "good");
  assert.equal(
    await fs.readFile(path.join(dir, "vmlinuz"), "utf8"),
    "not really a kernel, but bytes",
  );
  assert.equal(await fs.readFile(path.join(dir, "initrd.img"), "utf8"), "initrd bytes");
  assert.equal(
    await fs.readlink(path.join(dir, "modules", "6.1.0-test", "build")),
    "/lib/modules/6.1.0-test/build",
  );
  const manifest = JSON.parse(await fs.readFile(path.join(dir, "manifest.json"), "utf8"));
  assert.equal(manifest.source, `${server.url}/bundles/good.tar.zst`);
  assert.equal(manifest.sha256, sha256(Buffer.from("not really a kernel, but bytes")));
  assert.ok(seen.length > 0, "download progress was reported");
  assert.equal(store.getKernel("good")?.dir, dir);
  const listing = await service.catalog();
  assert.equal(listing.find((e) => e.name === "good")?.state, "pulled");
  assert.equal(listing.find((e) => e.name === "badsum")?.state, "available");

  await assert.rejects(service.pull("good"), /already present/);
  const again = await service.pull("good", { force: true });
  assert.equal(again.name, "good");
  assert.deepEqual(
    (await fs.readdir(home.layout.kernelsDir)).filter((f) => f.startsWith("good")),
    ["good"],
  );
});

const failures: Array<[string, RegExp]> = [
  ["badsum", /sha256 mismatch/],
  ["truncated", /truncated or corrupt|bytes, the catalog says/],
  ["missing", /HTTP 404/],
  ["traversal", /unsafe bundle member "modules\/\.\.\/\.\.\/evil": path leaves the bundle/],
  [
    "escape",
    /unsafe bundle member "modules\/link": symlink to "\.\.\/\.\.\/\.\.\/etc" leaves the bundle/,
  ],
  ["through-link", /a parent directory is a symlink/],
  ["nokernel", /holds no kernel/],
];

for (const [name, pattern] of failures) {
  test(`pull: ${name} fails clearly and leaves nothing behind`, async () => {
    await assert.rejects(service.pull(name), (err: unknown) => {
      assert.ok(err instanceof BangerError, String(err));
      assert.match(err.message, pattern);
      return true;
    });
    await assertNothingLeft(name);
  });
}

test("pull: only expected members are kept; devices and fifos are skipped; absolute symlinks allowed", async () => {
  await service.pull("extras");
  const dir = path.join(home.layout.kernelsDir, "extras");
  assert.deepEqual((await fs.readdir(dir)).sort(), ["manifest.json", "modules", "vmlinux"]);
  assert.deepEqual(await fs.readdir(path.join(dir, "modules")), ["abs"]);
  assert.equal(await fs.readlink(path.join(dir, "modules", "abs")), "/lib/modules");
});

test("pull: an unknown name lists what is available", async () => {
  await assert.rejects(
    service.pull("nope"),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.NotFound &&
      /available: .*good.*debian-cloud/.test(err.hint ?? ""),
  );
  await assert.rejects(service.pull("Bad Name"), /invalid kernel name/);
});

test("import: discovers files by glob and by metadata.json; delete refuses while an image uses it", async () => {
  const src = path.join(home.home, "import-src");
  await fs.mkdir(src);
  await fs.writeFile(path.join(src, "vmlinuz-6.2.0"), "kernel");
  await fs.writeFile(path.join(src, "initrd.img-6.2.0"), "initrd");
  const info = await service.import("imported", src);
  assert.equal(info.version, "6.2.0");
  const shown = await service.show("imported");
  assert.equal(shown.files.vmlinuz, path.join(info.dir, "vmlinuz"));
  assert.equal(shown.files.initrd, path.join(info.dir, "initrd.img"));

  const meta = path.join(home.home, "meta-src");
  await fs.mkdir(path.join(meta, "boot"), { recursive: true });
  await fs.writeFile(path.join(meta, "boot", "kern"), "\u007fELF....");
  await fs.writeFile(
    path.join(meta, "metadata.json"),
    JSON.stringify({ kernel: "boot/kern", version: "7.0", cmdline: "console=hvc0" }),
  );
  const fromMeta = await service.import("from-meta", meta);
  assert.equal(fromMeta.version, "7.0");
  const metaShown = await service.show("from-meta");
  assert.equal(metaShown.cmdline, "console=hvc0");
  assert.equal(metaShown.files.vmlinux, path.join(fromMeta.dir, "vmlinux"));

  await assert.rejects(
    service.import("empty", home.layout.configDir),
    /does not exist|no kernel found/,
  );
  await assertNothingLeft("empty");

  store.insertImage({
    id: "i1",
    name: "img",
    kernelRef: "imported",
    rootfsPath: "/x",
    source: null,
    digest: null,
    sizeBytes: null,
    managed: true,
    createdAt: "now",
    init: null,
    config: null,
  });
  await assert.rejects(service.delete("imported"), /used by image\(s\) img/);
  await service.delete("imported", { force: true });
  assert.equal(store.getKernel("imported"), null);
  await assert.rejects(fs.access(info.dir));
  store.deleteImage("i1");
});
