// Hostile image layers through the daemon's image.pull RPC, from the real docker-registry on
// 127.0.0.1. The daemon's home sets low [image] bounds so bombs and floods are refused fast.
// Every row: a clear error (or a harmless pull), the daemon alive, nothing left in its home,
// and a victim directory outside the home, named by the layers' symlinks, keeps every file.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import zlib from "node:zlib";
import type { DaemonClient } from "../../src/cli/client.js";
import { makeLayer, type LayerEntry } from "../helpers/layer.js";
import {
  pushBlob,
  pushImage,
  pushManifest,
  startRegistry,
  type TestRegistry,
} from "../helpers/registry.js";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

let daemon: HostileDaemon;
let registry: TestRegistry;
let victim: string;

/** A layer: entries to pack (gzip'ed), or the raw bytes of the blob. */
type Layer = LayerEntry[] | Buffer;
/** The image a row pushes: its layers, or a function that pushes it (and returns nothing). */
type Input = Layer[] | ((repo: string) => Promise<void>);

const files = async (dir: string) =>
  (await fs.readdir(dir, { recursive: true })).map(String).sort();

before(async () => {
  registry = await startRegistry();
  daemon = await hostileDaemon();
  await fs.mkdir(path.dirname(daemon.home.layout.configFile), { recursive: true });
  await fs.writeFile(
    daemon.home.layout.configFile,
    `[image]\nmax_layer_size = "1M"\nmax_image_size = "8M"\nmax_entries = 200\n`,
  );
  victim = await fs.mkdtemp(path.join(os.tmpdir(), "banger-hostile-victim-"));
  await fs.mkdir(path.join(victim, "sub"));
  for (const f of ["keep", ".containerenv", ".dockerenv", "sub/deep", "passwd"])
    await fs.writeFile(path.join(victim, f), "the host's own file");
});
after(async () => {
  await daemon?.close();
  await registry?.stop();
  if (victim) await fs.rm(victim, { recursive: true, force: true });
});

const link = (name = "link", target = () => victim): LayerEntry => ({
  name,
  type: "symlink",
  get linkname() {
    return target();
  },
});
/** A one-file tar whose header field at `offset` is rewritten in base-256 (checksum fixed). */
async function patchedHeader(
  offset: number,
  length: number,
  first: number,
  fill: number,
): Promise<Buffer> {
  const raw = await makeLayer([{ name: "f", body: "x" }], { gzip: false });
  raw[offset] = first;
  raw.fill(fill, offset + 1, offset + length);
  raw.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += raw[i]!;
  raw.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return zlib.gzipSync(raw);
}
/** An image whose manifest declares `size` for a real (small) layer blob. */
const declaring =
  (size: number) =>
  async (repo: string): Promise<void> => {
    const layer = await makeLayer([{ name: "f", body: "x" }]);
    const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: {} }));
    const manifest = {
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: await pushBlob(registry.url, repo, config),
        size: config.length,
      },
      layers: [
        {
          mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
          digest: await pushBlob(registry.url, repo, layer),
          size,
        },
      ],
    };
    await pushManifest(
      registry.url,
      repo,
      "v1",
      Buffer.from(JSON.stringify(manifest)),
      manifest.mediaType,
    );
  };

const LEAVES = /path leaves the image/;
const HOSTILE_NAME = /control character or a double quote/;
const UNREADABLE = /cannot read image layer/;
const rows = async (): Promise<Array<HostileRow<Input>>> => [
  // Paths that leave the tree.
  { name: "traversal", input: [[{ name: "../../etc/evil", body: "x" }]], expect: LEAVES },
  { name: "inner traversal", input: [[{ name: "a/../../evil", body: "x" }]], expect: LEAVES },
  { name: "absolute path", input: [[{ name: "/etc/evil", body: "x" }]], expect: /absolute path/ },
  {
    name: "PAX path with traversal",
    input: [[{ name: "ok", body: "x", pax: { path: "../../evil" } }]],
    expect: LEAVES,
  },
  {
    name: "relative symlink out of the tree",
    input: [[{ name: "usr/x", type: "symlink", linkname: "../../../../etc" }]],
    expect: /symlink to "\.\.\/\.\.\/\.\.\/\.\.\/etc" leaves the image/,
  },
  {
    name: "PAX linkpath out of the tree",
    input: [[{ name: "x", type: "symlink", linkname: "ok", pax: { linkpath: "../../../etc" } }]],
    expect: /leaves the image/,
  },
  // Writing through a symlink.
  {
    name: "file through a symlink, same layer",
    input: [[link(), { name: "link/passwd", body: "pwned" }]],
    expect: /its parent link is a symlink/,
  },
  {
    name: "file through a symlink, later layer",
    input: [[link()], [{ name: "link/sub/deep", body: "pwned" }]],
    expect: /its parent link is a symlink/,
  },
  {
    name: "directory through a symlink",
    input: [[link()], [{ name: "link/newdir/", type: "directory" }]],
    expect: /its parent link is a symlink/,
  },
  // Whiteouts and opaque markers under a symlink: both shapes of the issue.
  {
    name: "opaque marker under a symlink",
    input: [[link()], [{ name: "link/.wh..wh..opq" }]],
    expect: /through the symlink link is refused/,
  },
  {
    name: "whiteout under a symlink",
    input: [[link()], [{ name: "link/.wh.keep" }]],
    expect: /through the symlink link is refused/,
  },
  {
    name: "whiteout of a directory under a symlink",
    input: [[link()], [{ name: "link/.wh.sub" }]],
    expect: /through the symlink link is refused/,
  },
  {
    name: "whiteout two levels under a symlink",
    input: [[link()], [{ name: "link/sub/.wh.deep" }]],
    expect: /through the symlink link is refused/,
  },
  {
    name: "whiteout under a symlinked parent directory",
    input: [[{ name: "d/", type: "directory" }, link("d/l")], [{ name: "d/l/.wh.passwd" }]],
    expect: /through the symlink d\/l is refused/,
  },
  {
    name: "opaque directory replaced by a symlink in its own layer",
    input: [
      [
        { name: "a/", type: "directory" },
        { name: "a/old", body: "o" },
      ],
      [{ name: "a/.wh..wh..opq" }, { name: ".wh.a" }, link("a")],
    ],
    expect: /through the symlink a is refused/,
  },
  {
    name: "relative symlink to the victim's parent",
    input: [[{ name: "rel", type: "symlink", linkname: "../.." }], [{ name: "rel/.wh..wh..opq" }]],
    expect: /leaves the image/,
  },
  {
    name: "whiteout of '..'",
    input: [[{ name: ".wh..." }]],
    expect: /whiteout of "\.\." names no file/,
  },
  {
    name: "whiteout of '.'",
    input: [[{ name: "a/.wh.." }]],
    expect: /whiteout of "\." names no file/,
  },
  {
    name: "whiteout of nothing",
    input: [[{ name: "a/.wh." }]],
    expect: /whiteout of "" names no file/,
  },
  // Hardlinks.
  {
    name: "hardlink out of the tree",
    input: [[{ name: "x", type: "link", linkname: "../etc/shadow" }]],
    expect: LEAVES,
  },
  {
    name: "hardlink to an absolute host path",
    input: [[{ name: "x", type: "link", linkname: "/etc/shadow" }]],
    expect: /absolute path/,
  },
  {
    name: "hardlink to a directory",
    input: [
      [
        { name: "d/", type: "directory" },
        { name: "x", type: "link", linkname: "d" },
      ],
    ],
    expect: /not a file in the image/,
  },
  {
    name: "hardlink through a symlink",
    input: [[link(), { name: "x", type: "link", linkname: "link/passwd" }]],
    expect: /not a file in the image/,
  },
  {
    name: "hardlink to a missing file",
    input: [[{ name: "x", type: "link", linkname: "nope" }]],
    expect: /not a file in the image/,
  },
  {
    name: "hardlink replacing its own target's directory",
    input: [
      [
        { name: "a/b", body: "b" },
        { name: "a", type: "link", linkname: "a/b" },
      ],
    ],
    expect: /would replace its own target/,
  },
  // Bounds (this home: 1 MiB a layer, 8 MiB unpacked, 200 entries).
  {
    name: "decompression bomb (16 MiB of zeros in a 16 KiB layer)",
    input: [
      zlib.gzipSync(
        Buffer.concat([
          await makeLayer([{ name: "f", body: "x" }], { gzip: false }),
          Buffer.alloc(16 * 1024 * 1024),
        ]),
      ),
    ],
    expect: /unpacks to more than 8 MiB[\s\S]*max_image_size/,
  },
  {
    name: "a zero-filled file declaring more than the image may hold",
    input: [[{ name: "zeros", body: Buffer.alloc(16 * 1024 * 1024) }]],
    expect: /member "zeros" declares 16777216 bytes, past the image's 8 MiB[\s\S]*max_image_size/,
  },
  {
    name: "files adding up to more than the image may hold",
    input: [
      Array.from({ length: 12 }, (_, i) => ({ name: `z${i}`, body: Buffer.alloc(1024 * 1024) })),
    ],
    expect: /max_image_size/,
  },
  {
    name: "declared layer size of 10^15",
    input: declaring(1e15),
    expect: /declares [\d.]+ TiB, more than the 1 MiB a layer may have[\s\S]*max_layer_size/,
  },
  {
    name: "layer larger than max_layer_size",
    input: [[{ name: "noise", body: randomBytes(1536 * 1024) }]],
    expect: /more than the 1 MiB a layer may have/,
  },
  {
    name: "too many entries",
    input: [Array.from({ length: 300 }, (_, i) => ({ name: `f${i}`, body: "" }))],
    expect: /more than 200 entries[\s\S]*max_entries/,
  },
  {
    name: "too many entries across layers",
    input: [
      Array.from({ length: 120 }, (_, i) => ({ name: `a${i}`, body: "" })),
      Array.from({ length: 120 }, (_, i) => ({ name: `b${i}`, body: "" })),
    ],
    expect: /more than 200 entries/,
  },
  // Names debugfs or Linux cannot take.
  { name: "newline in a name", input: [[{ name: "etc/a\nb", body: "x" }]], expect: HOSTILE_NAME },
  {
    name: "double quote in a name",
    input: [[{ name: 'etc/"x"', body: "x" }]],
    expect: HOSTILE_NAME,
  },
  {
    name: "escape in a name",
    input: [[{ name: "etc/\u001b[2J", body: "x" }]],
    expect: HOSTILE_NAME,
  },
  { name: "DEL in a name", input: [[{ name: "etc/a\u007f", body: "x" }]], expect: HOSTILE_NAME },
  { name: "tab in a name", input: [[{ name: "etc/a\tb", body: "x" }]], expect: HOSTILE_NAME },
  {
    name: "control character in a symlink target",
    input: [[{ name: "l", type: "symlink", linkname: "/etc/\u0007" }]],
    expect: /the symlink's target is empty, too long, or has a control character/,
  },
  {
    name: "300-byte name component",
    input: [[{ name: `d/${"n".repeat(300)}`, body: "x" }]],
    expect: /longer than Linux allows/,
  },
  {
    name: "5000-byte symlink target",
    input: [[{ name: "l", type: "symlink", linkname: `/${"t".repeat(5000)}` }]],
    expect: /the symlink's target is empty, too long/,
  },
  // Layers that are not tar streams, or lie in their headers.
  {
    name: "unparsable size field",
    input: [await patchedHeader(124, 12, 0x83, 0x30)],
    expect: /size field is invalid/,
  },
  {
    name: "unparsable uid field",
    input: [await patchedHeader(108, 8, 0x83, 0x30)],
    expect: /uid field is invalid/,
  },
  { name: "noise, not a tar", input: [randomBytes(4096)], expect: UNREADABLE },
  {
    name: "truncated gzip",
    input: [(await makeLayer([{ name: "f", body: "x".repeat(5000) }])).subarray(0, 40)],
    expect: UNREADABLE,
  },
  {
    name: "zstd magic, then noise",
    input: [Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), randomBytes(512)])],
    expect: UNREADABLE,
  },
  // Accepted, and harmless.
  {
    name: "devices and fifos are skipped",
    input: [
      [
        { name: "dev/sda", type: "character-device" },
        { name: "run/fifo", type: "fifo" },
      ],
    ],
    expect: null,
  },
  {
    name: "symlinked /run keeps the host's .containerenv",
    input: [[link("run"), link(".dockerenv"), { name: "etc/os-release", body: "ID=x\n" }]],
    expect: null,
  },
  {
    name: "absolute symlinks, unicode and backslashes are kept",
    input: [
      [
        link("etc/alt"),
        { name: "usr/share/dé/ü", body: "u" },
        { name: "usr/lib/systemd/system/a\\x2db.slice", body: "[Unit]\n" },
        { name: "usr/bin/su", body: "su", mode: 0o4755 },
        { name: "usr/bin/su-link", type: "link", linkname: "usr/bin/su" },
      ],
    ],
    expect: null,
  },
  {
    name: "whiteouts of missing paths and a root opaque marker",
    input: [
      [{ name: "a/b", body: "x" }],
      [{ name: "nope/.wh.x" }, { name: ".wh..wh..opq" }, { name: ".wh.gone" }],
    ],
    expect: null,
  },
];

let rowIndex = 0;
async function attempt(client: DaemonClient, input: Input): Promise<void> {
  const repo = `hostile/row${rowIndex}`;
  const name = `row${rowIndex++}`;
  if (typeof input === "function") await input(repo);
  else {
    const blobs = await Promise.all(input.map((l) => (Buffer.isBuffer(l) ? l : makeLayer(l))));
    await pushImage(registry.url, repo, "v1", blobs);
  }
  const before = await files(victim);
  try {
    await client.call("image.pull", { ref: `${registry.host}/${repo}:v1`, name });
    await client.call("image.delete", { name });
  } finally {
    // Verified blobs stay cached by design; the table's "nothing left" is about everything else.
    await client.call("image.cache.prune", { dryRun: false });
    assert.deepEqual(await files(victim), before, `${name}: the victim directory changed`);
  }
}

test("hostile image layers are refused clearly (or applied harmlessly) and leave nothing", async () => {
  const client = await daemon.connect();
  try {
    const table = await rows();
    assert.ok(table.length >= 45, `${table.length} rows`);
    await runTable(table, (input) => attempt(client, input), {
      daemon,
      roots: [daemon.home.home],
    });
  } finally {
    client.close();
  }
});
