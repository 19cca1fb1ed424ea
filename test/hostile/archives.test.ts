// Hostile local image archives through the daemon's image.import RPC (and `image import -` for
// stdin): each row is an archive (a tar built here, an OCI layout directory, a FIFO) and the
// clear error it must get; then the daemon must answer and nothing may be left in its home.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import zlib from "node:zlib";
import * as zstd from "zstd-napi";
import { bangerBin } from "../helpers/cli.js";
import { makeLayer, type LayerEntry } from "../helpers/layer.js";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

const run = promisify(execFile);
let daemon: HostileDaemon;
let work: string;

before(async () => {
  daemon = await hostileDaemon();
  await fsp.mkdir(path.dirname(daemon.home.layout.configFile), { recursive: true });
  await fsp.writeFile(
    daemon.home.layout.configFile,
    `[image]\nmax_layer_size = "1M"\nmax_image_size = "8M"\nmax_entries = 200\n`,
  );
  work = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-archives-"));
});
after(async () => {
  await daemon?.close();
  if (work) await fsp.rm(work, { recursive: true, force: true });
});

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";

/** An OCI layout's files (name -> bytes) for one image of these layers; `tweak` edits the JSON first. */
async function ociLayout(
  opts: {
    platforms?: string[];
    architecture?: string;
    layerSize?: number;
    mediaType?: string;
    zstd?: boolean;
  } = {},
): Promise<{ files: Map<string, Buffer>; layer: string; manifest: string }> {
  const raw = await makeLayer(
    [
      { name: "etc/", type: "directory" },
      { name: "etc/os-release", body: "ID=hostile\n" },
    ],
    { gzip: false },
  );
  const layer = opts.zstd ? zstd.compress(raw) : zlib.gzipSync(raw);
  const config = json({
    architecture: opts.architecture ?? "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [`sha256:${sha(raw)}`] },
    config: {},
  });
  const manifest = json({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: `sha256:${sha(config)}`,
      size: config.length,
    },
    layers: [
      {
        mediaType:
          opts.mediaType ?? `application/vnd.oci.image.layer.v1.tar+${opts.zstd ? "zstd" : "gzip"}`,
        digest: `sha256:${sha(layer)}`,
        size: opts.layerSize ?? layer.length,
      },
    ],
  });
  const entry = {
    mediaType: OCI_MANIFEST,
    digest: `sha256:${sha(manifest)}`,
    size: manifest.length,
  };
  const index = json({
    schemaVersion: 2,
    manifests: opts.platforms
      ? opts.platforms.map((p) => {
          const [os, architecture] = p.split("/");
          return { ...entry, platform: { os, architecture } };
        })
      : [entry],
  });
  const files = new Map<string, Buffer>([
    ["oci-layout", json({ imageLayoutVersion: "1.0.0" })],
    ["index.json", index],
    [`blobs/sha256/${sha(config)}`, config],
    [`blobs/sha256/${sha(manifest)}`, manifest],
    [`blobs/sha256/${sha(layer)}`, layer],
  ]);
  return { files, layer: `blobs/sha256/${sha(layer)}`, manifest: `blobs/sha256/${sha(manifest)}` };
}

const members = (files: Map<string, Buffer>): LayerEntry[] =>
  [...files].map(([name, body]) => ({ name, body }));

/** A docker-archive (skopeo's shape): manifest.json, <hex>.json config, <hex>.tar layers. */
async function dockerArchive(
  o: { linkLayer?: boolean; badDiffId?: boolean } = {},
): Promise<LayerEntry[]> {
  const layer = await makeLayer([{ name: "etc/os-release", body: "ID=hostile\n" }], {
    gzip: false,
  });
  const config = json({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [`sha256:${o.badDiffId ? "0".repeat(64) : sha(layer)}`] },
  });
  const layerName = o.linkLayer ? "abc/layer.tar" : `${sha(layer)}.tar`;
  return [
    { name: `${sha(layer)}.tar`, body: layer },
    ...(o.linkLayer
      ? [{ name: "abc/layer.tar", type: "symlink" as const, linkname: "/etc/passwd" }]
      : []),
    { name: `${sha(config)}.json`, body: config },
    { name: "manifest.json", body: json([{ Config: `${sha(config)}.json`, Layers: [layerName] }]) },
  ];
}

/** The raw tar of `entries` (tar-stream writes names as given: `../x` and `/etc/passwd` too). */
const tarOf = (entries: LayerEntry[]) => makeLayer(entries, { gzip: false });

/** A tar whose first member's size field says `octalSize` (checksum fixed), data unchanged. */
async function declaringSize(octalSize: string): Promise<Buffer> {
  const raw = await tarOf([{ name: "blobs/sha256/big", body: "x" }]);
  raw.write(`${octalSize}\0`, 124, "ascii");
  raw.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += raw[i]!;
  raw.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  return raw;
}

/** What a row hands the daemon. */
type Input =
  | { file: Buffer }
  | { dir: Map<string, Buffer>; links?: Record<string, string> }
  | { fifo: true }
  | { stdin: Buffer };

let seq = 0;
async function attempt(input: Input): Promise<void> {
  const base = path.join(work, `in-${++seq}`);
  let target = `${base}.tar`;
  if ("file" in input) await fsp.writeFile(target, input.file);
  else if ("fifo" in input) await run("mkfifo", [target]);
  else if ("dir" in input) {
    target = base;
    for (const [name, body] of input.dir) {
      await fsp.mkdir(path.dirname(path.join(base, name)), { recursive: true });
      await fsp.writeFile(path.join(base, name), body);
    }
    for (const [name, to] of Object.entries(input.links ?? {})) {
      await fsp.rm(path.join(base, name), { force: true, recursive: true });
      await fsp.symlink(to, path.join(base, name));
    }
  } else {
    await fsp.writeFile(target, input.stdin);
    return viaStdin(target);
  }
  const client = await daemon.connect();
  try {
    await client.call("image.import", { path: target, name: `row-${seq}` });
  } finally {
    client.close();
  }
}

/** `banger image import - --name ...` with `file` as stdin; a failure becomes its stderr. */
async function viaStdin(file: string): Promise<void> {
  const fd = fs.openSync(file, "r");
  try {
    const child = spawn(bangerBin, ["image", "import", "-", "--name", `row-${seq}`], {
      env: daemon.env,
      stdio: [fd, "ignore", "pipe"],
      timeout: 60_000,
    });
    let stderr = "";
    child.stderr!.on("data", (c: Buffer) => (stderr += c.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    if (code !== 0) throw new Error(stderr);
  } finally {
    fs.closeSync(fd);
  }
}

const rows = async (): Promise<Array<HostileRow<Input>>> => {
  const good = await ociLayout();
  const goodTar = await tarOf(members(good.files));
  const withFile = (name: string, body: Buffer | null) => {
    const files = new Map(good.files);
    if (body) files.set(name, body);
    else files.delete(name);
    return files;
  };
  const corrupt = Buffer.from(good.files.get(good.layer)!);
  corrupt[corrupt.length - 5] = corrupt[corrupt.length - 5]! ^ 0xff;
  return [
    {
      name: "a well-formed oci-archive (the builder's control)",
      input: { file: goodTar },
      expect: null,
    },
    { name: "a well-formed OCI layout directory", input: { dir: good.files }, expect: null },
    {
      name: "a well-formed docker-archive",
      input: { file: await tarOf(await dockerArchive()) },
      expect: null,
    },
    {
      name: "a zstd layer its media type calls zstd (accepted)",
      input: { file: await tarOf(members((await ociLayout({ zstd: true })).files)) },
      expect: null,
    },
    {
      name: "a zstd layer its media type calls gzip",
      input: {
        file: await tarOf(
          members(
            (
              await ociLayout({
                zstd: true,
                mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
              })
            ).files,
          ),
        ),
      },
      expect: /is zstd, but its media type says gzip/,
    },
    {
      name: "a member escaping with ../",
      input: { file: await tarOf([...members(good.files), { name: "../x", body: "x" }]) },
      expect: /member "\.\.\/x" is not a plain relative path/,
    },
    {
      name: "a member escaping in the middle of its name",
      input: { file: await tarOf([{ name: "blobs/../../x", body: "x" }, ...members(good.files)]) },
      expect: /not a plain relative path/,
    },
    {
      name: "an absolute member",
      input: { file: await tarOf([{ name: "/etc/passwd", body: "x" }, ...members(good.files)]) },
      expect: /member "\/etc\/passwd" is an absolute path/,
    },
    {
      name: "a member name with a control character",
      input: { file: await tarOf([{ name: "a\nb", body: "x" }, ...members(good.files)]) },
      expect: /control character/,
    },
    {
      name: "a duplicate member",
      input: { file: await tarOf([...members(good.files), { name: "index.json", body: "{}" }]) },
      expect: /member "index\.json" appears twice/,
    },
    {
      name: "a FIFO member",
      input: { file: await tarOf([{ name: "pipe", type: "fifo" }, ...members(good.files)]) },
      expect: /member "pipe" is a fifo, not a file/,
    },
    {
      name: "a symlinked blob in an archive",
      input: {
        file: await tarOf([
          ...members(withFile(good.layer, null)),
          { name: good.layer, type: "symlink", linkname: "/etc/passwd" },
        ]),
      },
      expect: /is a link, and banger follows none/,
    },
    {
      name: "a symlinked blob in a layout directory",
      input: { dir: good.files, links: { [good.layer]: "/etc/passwd" } },
      expect: /is a symbolic link \(banger follows none\)/,
    },
    {
      name: "a symlinked blobs directory in a layout directory",
      input: { dir: good.files, links: { "blobs/sha256": "/etc" } },
      expect: /blobs\/sha256 is a symbolic link, not a directory/,
    },
    {
      name: "a docker-archive whose manifest names a symlinked layer",
      input: { file: await tarOf(await dockerArchive({ linkLayer: true })) },
      expect: /member "abc\/layer\.tar" is a link/,
    },
    {
      name: "a blob whose digest does not match",
      input: { file: await tarOf(members(withFile(good.layer, corrupt))) },
      expect: /digest mismatch for layer sha256:/,
    },
    {
      name: "a docker-archive layer that is not the config's diff_id",
      input: { file: await tarOf(await dockerArchive({ badDiffId: true })) },
      expect: /digest mismatch for layer .*\.tar: the config says sha256:0000/,
    },
    {
      name: "a missing blob",
      input: { file: await tarOf(members(withFile(good.layer, null))) },
      expect: /the layer sha256:[0-9a-f]{64} it names is not in it/,
    },
    {
      name: "a missing blob in a layout directory",
      input: { dir: withFile(good.layer, null) },
      expect: /the layer sha256:[0-9a-f]{64} it names is not in it/,
    },
    {
      name: "a truncated archive (cut inside a member)",
      input: { file: goodTar.subarray(0, 1536 + 100) },
      expect: /not a readable tar archive \(Unexpected end of data\)/,
    },
    {
      name: "a truncated archive (cut between members)",
      input: { file: goodTar.subarray(0, 1024) },
      expect: /ends before the tar's end-of-archive marker/,
    },
    {
      name: "an index with no linux/amd64",
      input: {
        file: await tarOf(
          members((await ociLayout({ platforms: ["linux/arm64", "linux/s390x"] })).files),
        ),
      },
      expect: /no linux\/amd64 image \(it has: linux\/arm64, linux\/s390x\)/,
    },
    {
      name: "a lone image whose config is arm64",
      input: { file: await tarOf(members((await ociLayout({ architecture: "arm64" })).files)) },
      expect: /its image is linux\/arm64, not linux\/amd64/,
    },
    {
      name: "a huge declared size in a member's tar header",
      input: { file: await declaringSize("70000000000") },
      expect: /declares 7(\.0)? GiB, more than an image may have[\s\S]*max_layer_size/,
    },
    {
      name: "a huge declared size in a layer descriptor",
      input: { file: await tarOf(members((await ociLayout({ layerSize: 2 ** 40 })).files)) },
      expect: /declares 1(\.0)? TiB, more than the 1(\.0)? MiB a layer may have/,
    },
    {
      name: "a layer whose media type says uncompressed but is gzip",
      input: {
        file: await tarOf(
          members((await ociLayout({ mediaType: "application/vnd.oci.image.layer.v1.tar" })).files),
        ),
      },
      expect: /is gzip, but its media type says none/,
    },
    {
      name: "a layer of an unknown media type",
      input: {
        file: await tarOf(members((await ociLayout({ mediaType: "application/x-evil" })).files)),
      },
      expect: /media type "application\/x-evil", which banger does not unpack/,
    },
    {
      name: "a non-archive file",
      input: { file: Buffer.from("this is not a tar archive, just text\n".repeat(40)) },
      expect: /not a readable tar archive/,
    },
    {
      name: "a tar that is neither OCI nor docker-archive",
      input: { file: await tarOf([{ name: "hello.txt", body: "hi" }]) },
      expect: /neither an OCI layout .* nor a docker-archive/,
    },
    {
      name: "a FIFO as the file",
      input: { fifo: true },
      expect: /is a FIFO \(named pipe\), not a regular file/,
    },
    {
      name: "a half-sent archive on stdin",
      input: { stdin: goodTar.subarray(0, 1024) },
      expect: /the archive on stdin: it ends before the tar's end-of-archive marker/,
    },
    {
      name: "a whole archive on stdin (accepted; its spool file removed)",
      input: { stdin: goodTar },
      expect: null,
    },
  ];
};

test("hostile image archives are refused clearly, the daemon lives and nothing is left", async () => {
  const table = await rows();
  // Accepted rows publish an image; that is what they are for, so images/<id>/ is not a leftover.
  await runTable(
    table,
    async (input, row) => {
      await attempt(input);
      if (row.expect === null) {
        const client = await daemon.connect();
        try {
          await client.call("image.delete", { name: `row-${seq}` });
        } finally {
          client.close();
        }
      }
    },
    { daemon, roots: [daemon.home.home] },
  );
  assert.ok(table.length >= 25);
});
