import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import { BlobCache } from "../src/image/oci/blob-cache.js";
import { defaultImageName, formatReference, parseReference } from "../src/image/oci/reference.js";
import { RegistryClient } from "../src/image/oci/registry.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { makeLayer } from "./helpers/layer.js";
import {
  digestOf,
  pushImage,
  startRegistry,
  startTokenProxy,
  type TestRegistry,
} from "./helpers/registry.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";
import type { ImageService } from "../src/image/service.js";
import { imageServices } from "./helpers/services.js";

const refCases: Array<[string, string, string, string | null, string | null]> = [
  ["debian:bookworm", "registry-1.docker.io", "library/debian", "bookworm", null],
  ["debian", "registry-1.docker.io", "library/debian", "latest", null],
  ["docker.io/library/alpine:3.20", "registry-1.docker.io", "library/alpine", "3.20", null],
  ["index.docker.io/x/y", "registry-1.docker.io", "x/y", "latest", null],
  ["user/tool:1.0", "registry-1.docker.io", "user/tool", "1.0", null],
  ["ghcr.io/org/tool:v2", "ghcr.io", "org/tool", "v2", null],
  ["ghcr.io/org/team/tool", "ghcr.io", "org/team/tool", "latest", null],
  ["localhost/app", "localhost", "app", "latest", null],
  ["localhost:5000/app:dev", "localhost:5000", "app", "dev", null],
  ["127.0.0.1:5000/a/b:c", "127.0.0.1:5000", "a/b", "c", null],
  [`host:5000/a@sha256:${"a".repeat(64)}`, "host:5000", "a", null, `sha256:${"a".repeat(64)}`],
  [
    `a:t@sha256:${"b".repeat(64)}`,
    "registry-1.docker.io",
    "library/a",
    "t",
    `sha256:${"b".repeat(64)}`,
  ],
  ["my-app_x.y:1", "registry-1.docker.io", "library/my-app_x.y", "1", null],
];

for (const [input, registry, repository, tag, digest] of refCases) {
  test(`reference ${input}`, () => {
    assert.deepEqual(parseReference(input), { registry, repository, tag, digest });
  });
}

test("bad references fail clearly", () => {
  for (const [input, pattern] of [
    ["", /it is empty/],
    ["Debian:bookworm", /must be lower-case/],
    ["a//b", /empty path component/],
    ["a@sha256:123", /64 lower-case hex/],
    ["a:bad tag", /not a valid tag/],
    ["localhost:99999/x", /port 99999 of registry "localhost:99999" is not from 1 to 65535/],
    ["ex..com/x", /"ex\.\.com" is not a registry host\[:port\]/],
    ["a".repeat(300), /longer than 255 characters/],
  ] as const) {
    assert.throws(
      () => parseReference(input),
      (err: unknown) => err instanceof BangerError && pattern.test(err.message),
      input,
    );
  }
});

test("default image names", () => {
  assert.equal(defaultImageName(parseReference("debian:bookworm")), "debian-bookworm");
  assert.equal(defaultImageName(parseReference("ghcr.io/org/tool:1.2")), "tool-1.2");
  assert.equal(
    defaultImageName(parseReference(`x/app@sha256:${"c".repeat(64)}`)),
    `app-${"c".repeat(12)}`,
  );
  assert.equal(
    formatReference(parseReference("debian")),
    "registry-1.docker.io/library/debian:latest",
  );
});

// Against Debian's real docker-registry on 127.0.0.1.
const runner = createCommandRunner();
let registry: TestRegistry;
let home: TempLayout;
let store: Store;
let images: ImageService;

before(async () => {
  registry = await startRegistry();
  home = await tempLayout("banger-oci-");
  store = Store.open(home.layout.dbFile);
  ({ images } = imageServices(store, home.layout, { runner }));

  const base = await makeLayer([
    { name: "etc/", type: "directory" },
    { name: "etc/os-release", body: "ID=debian\n" },
    { name: "etc/alternatives/awk", type: "symlink", linkname: "/usr/bin/mawk" },
    { name: "usr/bin/mawk", body: "mawk", mode: 0o755 },
    { name: "usr/bin/passwd", body: "passwd", mode: 0o4755 },
    { name: "usr/bin/passwd-link", type: "link", linkname: "usr/bin/passwd" },
    { name: "var/cache/apt/a.bin", body: "a" },
    { name: "old-file", body: "x" },
    { name: ".dockerenv", body: "" },
  ]);
  const top = await makeLayer([
    { name: ".wh.old-file" },
    { name: "var/cache/apt/.wh..wh..opq" },
    { name: "var/cache/apt/fresh", body: "f" },
    { name: "home/app/", type: "directory", uid: 1000, gid: 1000 },
  ]);
  await pushImage(registry.url, "test/base", "v1", [base, top]);
  await pushImage(registry.url, "test/multi", "v1", [base], {
    indexPlatforms: ["linux/arm64", "linux/amd64"],
  });
  await pushImage(registry.url, "test/armonly", "v1", [base], {
    indexPlatforms: ["linux/arm64", "linux/s390x"],
  });
});

after(async () => {
  store.close();
  await registry.stop();
  await home.cleanup();
});

async function cachedBlobs(): Promise<string[]> {
  return (await fs.readdir(home.layout.ociBlobsDir).catch(() => [] as string[])).sort();
}

test("pull flattens a multi-layer image into an ext4 with exact owners, modes and banger's units", async () => {
  const stages = new Set<string>();
  const info = await images.pull({ ref: `${registry.host}/test/base:v1` }, (p) =>
    stages.add(p.stage),
  );
  assert.equal(info.name, "base-v1");
  assert.match(info.digest ?? "", /^sha256:[0-9a-f]{64}$/);
  assert.ok(stages.has("layers") && stages.has("ext4"));
  const rootfs = info.rootfsPath;
  const passwd = await statInImage(runner, rootfs, "/usr/bin/passwd");
  assert.deepEqual([passwd?.uid, passwd?.gid, passwd?.mode], [0, 0, 0o4755]);
  assert.equal((await statInImage(runner, rootfs, "/usr/bin/passwd-link"))?.mode, 0o4755);
  assert.equal((await statInImage(runner, rootfs, "/home/app"))?.uid, 1000);
  assert.equal(await statInImage(runner, rootfs, "/old-file"), null);
  assert.equal(await statInImage(runner, rootfs, "/var/cache/apt/a.bin"), null);
  assert.equal(await catInImage(runner, rootfs, "/var/cache/apt/fresh"), "f");
  assert.equal(await statInImage(runner, rootfs, "/.dockerenv"), null);
  assert.match(
    (await runner.run("debugfs", ["-R", "stat /etc/alternatives/awk", rootfs])).stdout,
    /Fast link dest: "\/usr\/bin\/mawk"/,
  );
  for (const unit of ["banger-network.service", "banger-first-boot.service"]) {
    const st = await statInImage(runner, rootfs, `/etc/systemd/system/${unit}`);
    assert.deepEqual([st?.uid, st?.gid], [0, 0], unit);
  }
  assert.ok((await cachedBlobs()).length >= 2, "layers are cached");
  assert.deepEqual(
    (await fs.readdir(home.layout.imagesDir)).filter((f) => f.includes("staging")),
    [],
  );
});

test("a second pull of the same image downloads no layer bytes", async () => {
  const proxy = await startTokenProxy(registry.url);
  try {
    const info = await images.pull({ ref: `${proxy.host}/test/base:v1`, name: "base-again" });
    assert.equal(info.name, "base-again");
    assert.equal(
      proxy.requests.filter((r) => r.includes("/blobs/")).length,
      1,
      `only manifests and the (small, uncached) config were fetched: ${proxy.requests.join(", ")}`,
    );
  } finally {
    await proxy.close();
  }
});

test("pull keeps the image's config, validated, on the row and in manifest.json", async () => {
  await pushImage(
    registry.url,
    "test/configured",
    "v1",
    [await makeLayer([{ name: "srv/app/" }])],
    {
      config: {
        Env: ["PATH=/opt/tool/bin:/usr/bin:/bin", "FOO=a b;$(x)`y`", "1BAD=x", "NL=a\nb"],
        WorkingDir: "/srv/app",
        Entrypoint: null,
        Cmd: ["sh"],
        ExposedPorts: { "80/tcp": {}, "53/udp": {}, "x\u001b]0;t": {} },
        User: "app",
        Labels: { ignored: "yes" },
      },
    },
  );
  const info = await images.pull({ ref: `${registry.host}/test/configured:v1` });
  const expected = {
    entrypoint: null,
    cmd: ["sh"],
    // Shell metacharacters are data: kept as they are, applied literally (never evaluated).
    env: ["PATH=/opt/tool/bin:/usr/bin:/bin", "FOO=a b;$(x)`y`"],
    workingDir: "/srv/app",
    exposedPorts: ["80/tcp", "53/udp"],
    user: "app",
    warnings: [
      'Env entry "1BAD=x" dropped: not KEY=VALUE with a shell variable name',
      "Env NL dropped: its value holds a newline or NUL, which cannot be applied",
      // JSON-quoted: the escape character arrives as text, never as a terminal control.
      'ExposedPorts entry "x\\u001b]0;t" dropped: not PORT or PORT/PROTO',
    ],
  };
  assert.deepEqual(info.config, expected);
  assert.deepEqual(images.show(info.name).config, expected);
  const manifest = JSON.parse(
    await fs.readFile(path.join(path.dirname(info.rootfsPath), "manifest.json"), "utf8"),
  ) as { config?: unknown };
  assert.deepEqual(manifest.config, expected);
  // An image config that sets nothing is an empty summary, not none.
  const base = images.show("base-v1");
  assert.deepEqual(base.config?.env, []);
});

test("a config field that must be refused is refused before any layer is requested", async () => {
  // A layer no other test pushed, so no cache hit hides a request for it.
  const layer = await makeLayer([{ name: "refused/only-here", body: "never fetched" }]);
  await pushImage(registry.url, "test/badconfig", "v1", [layer], {
    config: { WorkingDir: 7 },
  });
  const proxy = await startTokenProxy(registry.url);
  try {
    await assert.rejects(
      images.pull({ ref: `${proxy.host}/test/badconfig:v1` }),
      /WorkingDir is not a string/,
    );
    const blobs = proxy.requests.filter((r) => r.includes("/blobs/"));
    assert.equal(blobs.length, 1, `only the config blob was requested: ${blobs.join(", ")}`);
    assert.ok(!blobs[0]!.includes(digestOf(layer)), "the layer was not requested");
    assert.ok(!(await cachedBlobs()).includes(digestOf(layer).slice("sha256:".length)));
    assert.equal(store.getImageByName("badconfig-v1"), null);
  } finally {
    await proxy.close();
  }
});

test("an index resolves to linux/amd64; an index without it lists what it has", async () => {
  const info = await images.pull({ ref: `${registry.host}/test/multi:v1` });
  assert.equal(info.name, "multi-v1");
  await assert.rejects(
    images.pull({ ref: `${registry.host}/test/armonly:v1` }),
    /has no linux\/amd64 image \(it has: linux\/arm64, linux\/s390x\)/,
  );
  assert.equal(store.getImageByName("armonly-v1"), null);
});

test("a corrupted blob is rejected by digest and nothing is cached or installed", async () => {
  const proxy = await startTokenProxy(registry.url, { corruptBlobs: true });
  const fresh = await tempLayout("banger-oci-corrupt-");
  const freshStore = Store.open(fresh.layout.dbFile);
  try {
    const svc = imageServices(freshStore, fresh.layout, { runner }).images;
    await assert.rejects(
      svc.pull({ ref: `${proxy.host}/test/base:v1` }),
      // The config is fetched before the layers, so its check is the first to fire.
      /digest mismatch for (blob|config) sha256:/,
    );
    assert.deepEqual(
      await fs.readdir(fresh.layout.ociBlobsDir).catch(() => []),
      [],
      "nothing cached",
    );
    assert.deepEqual(
      await fs.readdir(fresh.layout.imagesDir).catch(() => []),
      [],
      "nothing installed",
    );
    assert.deepEqual(freshStore.listImages(), []);
  } finally {
    freshStore.close();
    await fresh.cleanup();
    await proxy.close();
  }
});

test("token auth: anonymous tokens, and Basic credentials from docker's config.json", async () => {
  const anon = await startTokenProxy(registry.url);
  const guarded = await startTokenProxy(registry.url, { basic: "alice:s3cret" });
  const cache = new BlobCache(path.join(home.home, "auth-cache"));
  try {
    const resolved = await new RegistryClient().resolveManifest(
      parseReference(`${anon.host}/test/base:v1`),
    );
    assert.equal(resolved.manifest.layers.length, 2);
    assert.ok(anon.requests.some((r) => r.startsWith("GET /token")));

    const ref = parseReference(`${guarded.host}/test/base:v1`);
    await assert.rejects(
      new RegistryClient({ dockerConfigFile: "/nonexistent" }).resolveManifest(ref),
      /token service refused \(HTTP 401\)/,
    );
    const configFile = path.join(home.home, "docker-config.json");
    await fs.writeFile(
      configFile,
      JSON.stringify({
        auths: { [guarded.host]: { auth: Buffer.from("alice:s3cret").toString("base64") } },
      }),
    );
    const client = new RegistryClient({ dockerConfigFile: configFile });
    const withCreds = await client.resolveManifest(ref);
    const blob = await client.fetchBlob(ref, withCreds.manifest.layers[0]!, cache);
    assert.ok((await fs.stat(blob)).size > 0);
  } finally {
    await anon.close();
    await guarded.close();
  }
});

test("unknown images and unreachable registries fail clearly", async () => {
  await assert.rejects(
    images.pull({ ref: `${registry.host}/test/nope:v1` }),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.NotFound &&
      /not found in registry/.test(err.message),
  );
  await assert.rejects(
    images.pull({ ref: "127.0.0.1:1/x:y" }),
    /cannot reach registry 127\.0\.0\.1:1/,
  );
  await assert.rejects(
    images.pull({ ref: `${registry.host}/test/base:v1`, name: "base-v1" }),
    /already exists/,
  );
});

test("cache prune tallies, honours --dry-run, and empties the cache", async () => {
  const before = await cachedBlobs();
  assert.ok(before.length > 0);
  const dry = await images.cachePrune(true);
  assert.equal(dry.blobs, before.length);
  assert.ok(dry.freedBytes > 0);
  assert.deepEqual(await cachedBlobs(), before);
  const real = await images.cachePrune(false);
  assert.equal(real.blobs, before.length);
  assert.deepEqual(await cachedBlobs(), []);
  assert.deepEqual(
    (await fs.readdir(path.dirname(home.layout.ociBlobsDir))).sort(),
    ["sha256"],
    "no aside dir left",
  );
  const noCacheLayout = { ...home.layout, ociBlobsDir: path.join(home.home, "no-cache-here") };
  const empty = await imageServices(store, noCacheLayout, { runner }).images.cachePrune(false);
  assert.deepEqual([empty.blobs, empty.freedBytes], [0, 0], "a missing cache is zero");
});

/** A directory outside the store with files an image must never be able to touch. */
async function victimDir(name: string): Promise<{ dir: string; files: () => Promise<string[]> }> {
  const dir = path.join(home.home, name);
  await fs.mkdir(path.join(dir, "sub"), { recursive: true });
  for (const f of ["keep", "notes.txt", ".containerenv", "sub/deep"]) {
    await fs.writeFile(path.join(dir, f), "mine");
  }
  return {
    dir,
    files: async () => (await fs.readdir(dir, { recursive: true })).map((f) => f.toString()).sort(),
  };
}

const nothingStaged = async () =>
  assert.deepEqual(
    (await fs.readdir(home.layout.imagesDir).catch(() => [] as string[])).filter((f) =>
      f.includes("staging"),
    ),
    [],
    "no staging dir left",
  );

for (const [shape, marker] of [
  ["opaque marker under a symlink", "link/.wh..wh..opq"],
  ["whiteout under a symlink", "link/.wh.keep"],
  ["whiteout of a subdirectory under a symlink", "link/.wh.sub"],
] as const) {
  test(`${shape} is refused and never touches the symlink's host target`, async () => {
    const victim = await victimDir(`victim-${shape.replaceAll(" ", "-")}`);
    const before = await victim.files();
    const repo = `test/wh-${shape.split(" ")[0]}-${before.length}`;
    await pushImage(registry.url, repo, "v1", [
      await makeLayer([{ name: "link", type: "symlink", linkname: victim.dir }]),
      await makeLayer([{ name: marker }]),
    ]);
    await assert.rejects(
      images.pull({
        ref: `${registry.host}/${repo}:v1`,
        name: `wh-${before.length}-${marker.length}`,
      }),
      (err: unknown) =>
        err instanceof BangerError &&
        /through the symlink link is refused/.test(err.message) &&
        err.message.includes(marker),
    );
    assert.deepEqual(await victim.files(), before, "the victim keeps every file");
    assert.equal(store.getImageByName(`wh-${before.length}-${marker.length}`), null);
    await nothingStaged();
  });
}

test("the container markers are not removed through a symlinked /run", async () => {
  const victim = await victimDir("victim-run");
  const before = await victim.files();
  await pushImage(registry.url, "test/run-link", "v1", [
    await makeLayer([
      { name: "run", type: "symlink", linkname: victim.dir },
      { name: "etc/os-release", body: "ID=debian\n" },
    ]),
  ]);
  const info = await images.pull({ ref: `${registry.host}/test/run-link:v1` });
  assert.equal(info.name, "run-link-v1");
  assert.deepEqual(await victim.files(), before, "the host's .containerenv stays");
  await nothingStaged();
});
