import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { BlobCache } from "../src/image/oci/blob-cache.js";
import { parseReference } from "../src/image/oci/reference.js";
import { explainNetworkFailure } from "../src/image/oci/registry-errors.js";
import { RegistryClient, type Descriptor } from "../src/image/oci/registry.js";
import { startServer, type TestServer } from "./helpers/http-server.js";
import {
  digestOf,
  pushBlob,
  pushImage,
  pushManifest,
  startRegistry,
  type TestRegistry,
} from "./helpers/registry.js";

// The registry client against misbehaving registries: Debian's real docker-registry
// where it can show the case (it accepts manifests whose sizes lie), else a crafted
// HTTP(S) server. Everything listens on 127.0.0.1.
let registry: TestRegistry;
let server: TestServer;
let dir: string;

const OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json";
const layerBytes = Buffer.from("layer bytes, not really a tar");
const configBytes = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux" }));
const descriptor = (bytes: Buffer, size = bytes.length): Descriptor => ({
  mediaType: "application/octet-stream",
  digest: digestOf(bytes),
  size,
});

before(async () => {
  registry = await startRegistry();
  server = await startServer();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-oci-faults-"));
  await pushBlob(registry.url, "test/sizes", layerBytes);
  await pushBlob(registry.url, "test/sizes", configBytes);
  for (const [tag, layerSize, configSize] of [
    ["layer-declares-less", layerBytes.length - 1, configBytes.length],
    ["layer-declares-more", layerBytes.length + 1, configBytes.length],
    ["config-declares-less", layerBytes.length, configBytes.length - 1],
    ["config-declares-more", layerBytes.length, configBytes.length + 1],
  ] as const) {
    const manifest = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { ...descriptor(configBytes, configSize), mediaType: "application/json" },
      layers: [descriptor(layerBytes, layerSize)],
    };
    await pushManifest(
      registry.url,
      "test/sizes",
      tag,
      Buffer.from(JSON.stringify(manifest)),
      OCI_MANIFEST,
    );
  }
  const plat = (list: string[]) => ({ indexPlatforms: list });
  await pushImage(
    registry.url,
    "test/variants",
    "plain-wins",
    [layerBytes],
    plat(["linux/amd64/v3", "linux/arm64/v8", "linux/amd64"]),
  );
  await pushImage(
    registry.url,
    "test/variants",
    "v1-wins",
    [layerBytes],
    plat(["linux/amd64/v2", "linux/amd64/v1"]),
  );
  await pushImage(
    registry.url,
    "test/variants",
    "lowest-level",
    [layerBytes],
    plat(["linux/amd64/v3", "linux/amd64/v2"]),
  );
  await pushImage(
    registry.url,
    "test/variants",
    "arm-only",
    [layerBytes],
    plat(["linux/arm/v7", "linux/arm64/v8", "unknown/unknown"]),
  );
});

after(async () => {
  await server.close();
  await registry.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

/** A fresh cache per case, so "nothing was cached" is checked on an empty directory. */
async function freshCache(): Promise<{ cache: BlobCache; files: () => Promise<string[]> }> {
  const cacheDir = await fs.mkdtemp(path.join(dir, "cache-"));
  return {
    cache: new BlobCache(cacheDir),
    files: () => fs.readdir(cacheDir),
  };
}

/** The crafted server as a registry: `repo` on 127.0.0.1:<port>, spoken to over plain HTTP. */
const crafted = (repo = "t/x:v1") => parseReference(`${new URL(server.url).host}/${repo}`);

test("blobs shorter or longer than their descriptor's size are rejected and never cached", async () => {
  const client = new RegistryClient();
  for (const [tag, pattern] of [
    [
      "layer-declares-less",
      /blob sha256:[0-9a-f]{64} is larger than the \d+ bytes its descriptor declares/,
    ],
    [
      "layer-declares-more",
      /blob sha256:[0-9a-f]{64} ended after \d+ of the \d+ bytes its descriptor/,
    ],
  ] as const) {
    const ref = parseReference(`${registry.host}/test/sizes:${tag}`);
    const { manifest } = await client.resolveManifest(ref);
    const { cache, files } = await freshCache();
    await assert.rejects(
      client.fetchBlob(ref, manifest.layers[0]!, cache),
      (err: unknown) =>
        err instanceof BangerError &&
        pattern.test(err.message) &&
        err.message.includes(manifest.layers[0]!.digest),
      tag,
    );
    assert.deepEqual(await files(), [], `${tag}: nothing cached, no partial file`);
  }
});

test("an endless blob is not read past its declared size", async () => {
  const { cache, files } = await freshCache();
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const blob = descriptor(chunk, 1000);
  const url = `/v2/t/x/blobs/${blob.digest}`;
  // 1 GiB on offer: had the client read it all, the server would have completed it.
  server.routes.set(url, { body: chunk, repeat: 1024 });
  await assert.rejects(
    new RegistryClient().fetchBlob(crafted(), blob, cache),
    /is larger than the 1000 bytes its descriptor declares/,
  );
  assert.ok(!server.completed.includes(url), "the client stopped reading");
  assert.deepEqual(await files(), []);
});

test("the image config: size, digest and HTTP status are checked before it is parsed", async () => {
  const client = new RegistryClient();
  const good = await client.resolveManifest(
    parseReference(`${registry.host}/test/variants:plain-wins`),
  );
  assert.equal(
    (
      await client.fetchConfig(
        parseReference(`${registry.host}/test/variants:plain-wins`),
        good.manifest.config,
      )
    ).architecture,
    "amd64",
  );
  for (const [tag, pattern] of [
    ["config-declares-less", /config sha256:[0-9a-f]{64} of .* is larger than the \d+ bytes/],
    [
      "config-declares-more",
      /config sha256:[0-9a-f]{64} of .* has \d+ bytes, but its descriptor declares/,
    ],
  ] as const) {
    const ref = parseReference(`${registry.host}/test/sizes:${tag}`);
    const { manifest } = await client.resolveManifest(ref);
    await assert.rejects(client.fetchConfig(ref, manifest.config), pattern, tag);
  }
  // A config the registry does not have: its real 404.
  const missing = descriptor(Buffer.from("no such config"));
  await assert.rejects(
    client.fetchConfig(parseReference(`${registry.host}/test/sizes:layer-declares-less`), missing),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.NotFound &&
      err.message.includes(`HTTP 404 for config ${missing.digest}`),
  );
  // A failing registry: its error page is not taken for JSON.
  const broken = descriptor(Buffer.from("{}"));
  server.routes.set(`/v2/t/x/blobs/${broken.digest}`, {
    status: 500,
    body: "<html>internal error</html>",
  });
  await assert.rejects(
    client.fetchConfig(crafted(), broken),
    (err: unknown) =>
      err instanceof BangerError &&
      err.message.includes(`answered HTTP 500 for config ${broken.digest}`) &&
      /try again later/.test(err.hint ?? ""),
  );
  // Right bytes, wrong kind: a digest-correct body that is not a JSON object.
  const notJson = Buffer.from("not json");
  server.routes.set(`/v2/t/x/blobs/${digestOf(notJson)}`, { body: notJson });
  await assert.rejects(
    client.fetchConfig(crafted(), descriptor(notJson)),
    /config sha256:[0-9a-f]{64} of .* is not a JSON object/,
  );
});

test("an index picks linux/amd64 without a variant or v1, else the lowest level", async () => {
  const client = new RegistryClient();
  for (const [tag, variant] of [
    ["plain-wins", undefined],
    ["v1-wins", "v1"],
    ["lowest-level", "v2"],
  ] as const) {
    const ref = parseReference(`${registry.host}/test/variants:${tag}`);
    const { manifest } = await client.resolveManifest(ref);
    const config = await client.fetchConfig(ref, manifest.config);
    assert.deepEqual([config.architecture, config.variant], ["amd64", variant], tag);
  }
  await assert.rejects(
    client.resolveManifest(parseReference(`${registry.host}/test/variants:arm-only`)),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.NotFound &&
      err.message.endsWith("has no linux/amd64 image (it has: linux/arm/v7, linux/arm64/v8)"),
  );
});

test("a registry that stops answering times out, naming it, and leaves nothing behind", async () => {
  const client = new RegistryClient({ idleTimeoutMs: 300 });
  server.routes.set("/v2/t/hang/manifests/v1", { body: "", noAnswer: true });
  await assert.rejects(
    client.resolveManifest(crafted("t/hang:v1")),
    (err: unknown) =>
      err instanceof BangerError &&
      err.message === `registry ${crafted().registry} stopped answering for 0.3 s` &&
      /running/.test(err.hint ?? ""),
  );
  // Stalls mid-download: the part already received is not cached.
  const { cache, files } = await freshCache();
  const blob = descriptor(Buffer.alloc(4096, 1));
  server.routes.set(`/v2/t/x/blobs/${blob.digest}`, { body: Buffer.alloc(4096, 1), stallAt: 100 });
  await assert.rejects(
    client.fetchBlob(crafted(), blob, cache),
    new RegExp(`stopped answering for 0.3 s while downloading blob ${blob.digest}`),
  );
  assert.deepEqual(await files(), []);
  // Cut off mid-download.
  const cut = descriptor(Buffer.alloc(4096, 2));
  server.routes.set(`/v2/t/x/blobs/${cut.digest}`, {
    body: Buffer.alloc(4096, 2),
    truncateAt: 100,
  });
  await assert.rejects(
    client.fetchBlob(crafted(), cut, cache),
    new RegExp(`closed the connection unexpectedly \\(.*\\) while downloading blob ${cut.digest}`),
  );
  assert.deepEqual(await files(), []);
});

test("a refused connection names the registry", async () => {
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  await assert.rejects(
    new RegistryClient().resolveManifest(parseReference(`127.0.0.1:${port}/x/y:z`)),
    (err: unknown) =>
      err instanceof BangerError &&
      err.message === `registry 127.0.0.1:${port} refused the connection` &&
      /is the registry running/.test(err.hint ?? ""),
  );
});

/**
 * HTTPS cases need a non-local registry name (local ones are plain HTTP); the
 * client's fetch seam sends `registry.invalid:<port>` to 127.0.0.1 instead.
 */
function viaLoopback(port: number): typeof fetch {
  return (input, init) =>
    fetch(String(input).replace(`//registry.invalid:${port}/`, `//127.0.0.1:${port}/`), init);
}

test("TLS failures name the registry and say what to do", async () => {
  const execFileP = promisify(execFile);
  const key = path.join(dir, "key.pem");
  const cert = path.join(dir, "cert.pem");
  await execFileP("openssl", [
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-subj",
    "/CN=registry.invalid",
    "-days",
    "2",
  ]);
  const tlsServer = https.createServer(
    { key: await fs.readFile(key), cert: await fs.readFile(cert) },
    (_req, res) => res.writeHead(404).end(),
  );
  await new Promise<void>((resolve) => tlsServer.listen(0, "127.0.0.1", resolve));
  const tlsPort = (tlsServer.address() as AddressInfo).port;
  const plainPort = new URL(server.url).port;
  try {
    await assert.rejects(
      new RegistryClient({ fetch: viaLoopback(tlsPort) }).resolveManifest(
        parseReference(`registry.invalid:${tlsPort}/x/y:z`),
      ),
      (err: unknown) =>
        err instanceof BangerError &&
        err.message ===
          `registry registry.invalid:${tlsPort} presented a TLS certificate this machine does not trust (DEPTH_ZERO_SELF_SIGNED_CERT)` &&
        /NODE_EXTRA_CA_CERTS/.test(err.hint ?? "") &&
        /--insecure-registry/.test(err.hint ?? ""),
    );
    // HTTPS to a registry that speaks plain HTTP.
    await assert.rejects(
      new RegistryClient({ fetch: viaLoopback(Number(plainPort)) }).resolveManifest(
        parseReference(`registry.invalid:${plainPort}/x/y:z`),
      ),
      (err: unknown) =>
        err instanceof BangerError &&
        err.message.startsWith(
          `TLS handshake with registry registry.invalid:${plainPort} failed`,
        ) &&
        err.hint === `if registry.invalid:${plainPort} speaks plain HTTP, pass --insecure-registry`,
    );
  } finally {
    tlsServer.closeAllConnections();
    await new Promise((resolve) => tlsServer.close(resolve));
  }
});

test("DNS, certificate and timeout codes map to messages that say what to do", () => {
  // fetch's own shape: TypeError("fetch failed") with the system error as its cause.
  const fetchFailed = (code: string, extra: Record<string, unknown> = {}) =>
    new TypeError("fetch failed", {
      cause: Object.assign(new Error(`${code} happened`), { code, ...extra }),
    });
  const remote = {
    host: "registry.example",
    registry: "registry.example",
    plainHttp: false,
    local: false,
  };
  const cases: Array<[unknown, RegExp, RegExp]> = [
    [
      fetchFailed("ENOTFOUND", { hostname: "registry.example" }),
      /^cannot resolve the host name registry\.example of registry registry\.example$/,
      /registry part of the reference/,
    ],
    [
      fetchFailed("EAI_AGAIN", { hostname: "registry.example" }),
      /^DNS did not answer for registry\.example of registry registry\.example$/,
      /network connection and DNS/,
    ],
    [
      fetchFailed("CERT_HAS_EXPIRED"),
      /expired or not yet valid \(CERT_HAS_EXPIRED\)/,
      /clock.*renew/,
    ],
    [
      fetchFailed("UNABLE_TO_VERIFY_LEAF_SIGNATURE"),
      /does not trust \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/,
      /NODE_EXTRA_CA_CERTS.*--insecure-registry/,
    ],
    [
      fetchFailed("ERR_TLS_CERT_ALTNAME_INVALID"),
      /issued for another name/,
      /host name the certificate was issued for/,
    ],
    [fetchFailed("UND_ERR_CONNECT_TIMEOUT"), /stopped answering$/, /firewall or proxy/],
    [
      new TypeError("fetch failed", {
        cause: new AggregateError([Object.assign(new Error("x"), { code: "ENETUNREACH" })]),
      }),
      /no network route to registry registry\.example \(ENETUNREACH\)/,
      /network connection/,
    ],
  ];
  for (const [err, message, hint] of cases) {
    const explained = explainNetworkFailure(err, remote);
    assert.equal(explained.code, ErrorCode.Precondition);
    assert.match(explained.message, message);
    assert.match(explained.hint ?? "", hint, explained.message);
  }
  // A blob storage host that a registry redirected to is named with its registry.
  assert.match(
    explainNetworkFailure(fetchFailed("ENOTFOUND"), { ...remote, host: "cdn.example" }).message,
    /^cannot resolve the host name cdn\.example of cdn\.example \(used by registry registry\.example\)$/,
  );
  // Already plain HTTP: no advice to pass --insecure-registry.
  const insecure = explainNetworkFailure(fetchFailed("ECONNRESET"), {
    ...remote,
    plainHttp: true,
  });
  assert.doesNotMatch(insecure.hint ?? "", /insecure/);
  const passthrough = new BangerError(ErrorCode.InvalidParams, "mine");
  assert.equal(explainNetworkFailure(passthrough, remote), passthrough);
});
