import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";

export interface TestRegistry {
  /** host:port, for image references. */
  host: string;
  url: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Debian's real docker-registry on 127.0.0.1, random port, temp storage; bounded wait until /v2/ answers. */
export async function startRegistry(): Promise<TestRegistry> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-registry-"));
  const port = await freePort();
  const config = path.join(dir, "config.yml");
  await fs.writeFile(
    config,
    [
      "version: 0.1",
      "log:",
      "  level: error",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${path.join(dir, "data")}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      "",
    ].join("\n"),
  );
  const child: ChildProcess = spawn("docker-registry", ["serve", config], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (c: Buffer) => (stderr += c.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await fetch(`${url}/v2/`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill("SIGKILL");
      await fs.rm(dir, { recursive: true, force: true });
      throw new Error(`docker-registry did not start: ${stderr.slice(-500)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host: `127.0.0.1:${port}`,
    url,
    async stop() {
      child.kill("SIGKILL");
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

export const digestOf = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

export async function pushBlob(url: string, repo: string, blob: Buffer): Promise<string> {
  const digest = digestOf(blob);
  const start = await fetch(`${url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
  if (start.status !== 202) throw new Error(`upload start: HTTP ${start.status}`);
  const location = new URL(start.headers.get("location")!, url);
  location.searchParams.set("digest", digest);
  const put = await fetch(location, {
    method: "PUT",
    body: blob,
    headers: { "content-type": "application/octet-stream" },
  });
  if (put.status !== 201) throw new Error(`upload: HTTP ${put.status} ${await put.text()}`);
  return digest;
}

export async function pushManifest(
  url: string,
  repo: string,
  reference: string,
  body: Buffer,
  mediaType: string,
): Promise<string> {
  const put = await fetch(`${url}/v2/${repo}/manifests/${reference}`, {
    method: "PUT",
    body,
    headers: { "content-type": mediaType },
  });
  if (put.status !== 201) throw new Error(`manifest: HTTP ${put.status} ${await put.text()}`);
  return digestOf(body);
}

export interface PushOptions {
  /**
   * Push an OCI index with these platforms ("os/arch" or "os/arch/variant"), each its
   * own manifest over the same layers, with a config naming its platform.
   */
  indexPlatforms?: string[];
  /** The image config's `config` (Env, WorkingDir, ...); default empty. */
  config?: Record<string, unknown>;
  /** Write the layers' real diff_ids (sha256 of each uncompressed tar), as tools that save archives need. */
  diffIds?: boolean;
}

/** Pushes a synthetic image (layers oldest first) over the registry API; returns the digest the tag points at. */
export async function pushImage(
  url: string,
  repo: string,
  tag: string,
  layers: Buffer[],
  opts: PushOptions = {},
): Promise<string> {
  const layerDescriptors: Array<{ mediaType: string; digest: string; size: number }> = [];
  for (const layer of layers) {
    const gz = layer[0] === 0x1f && layer[1] === 0x8b;
    layerDescriptors.push({
      mediaType: gz
        ? "application/vnd.oci.image.layer.v1.tar+gzip"
        : "application/vnd.oci.image.layer.v1.tar",
      digest: await pushBlob(url, repo, layer),
      size: layer.length,
    });
  }
  const pushPlatform = async (os: string, architecture: string, variant?: string) => {
    const config = Buffer.from(
      JSON.stringify({
        architecture,
        os,
        ...(variant ? { variant } : {}),
        rootfs: {
          type: "layers",
          diff_ids: opts.diffIds
            ? layers.map((l) => digestOf(l[0] === 0x1f && l[1] === 0x8b ? zlib.gunzipSync(l) : l))
            : [],
        },
        config: opts.config ?? {},
      }),
    );
    return Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config: {
          mediaType: "application/vnd.oci.image.config.v1+json",
          digest: await pushBlob(url, repo, config),
          size: config.length,
        },
        layers: layerDescriptors,
      }),
    );
  };
  if (!opts.indexPlatforms)
    return pushManifest(
      url,
      repo,
      tag,
      await pushPlatform("linux", "amd64"),
      "application/vnd.oci.image.manifest.v1+json",
    );
  const manifests = [];
  for (const p of opts.indexPlatforms) {
    const [os, architecture, variant] = p.split("/") as [string, string, string | undefined];
    const manifest = await pushPlatform(os, architecture, variant);
    manifests.push({
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      digest: await pushManifest(
        url,
        repo,
        `${tag}-${p.replaceAll("/", "-")}`,
        manifest,
        "application/vnd.oci.image.manifest.v1+json",
      ),
      size: manifest.length,
      platform: { os, architecture, ...(variant ? { variant } : {}) },
    });
  }
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.index.v1+json",
      manifests,
    }),
  );
  return pushManifest(url, repo, tag, index, "application/vnd.oci.image.index.v1+json");
}

export interface AuthProxy {
  host: string;
  /** Requests that reached the proxy, for "no layer bytes downloaded" checks. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * A Bearer-token front for a registry, like Docker Hub's: 401 with a challenge
 * unless the request carries the token its /token endpoint issued. With
 * `basic`, /token wants those credentials.
 */
export async function startTokenProxy(
  upstream: string,
  opts: { basic?: string; corruptBlobs?: boolean } = {},
): Promise<AuthProxy> {
  const token = `tok-${Math.random().toString(16).slice(2)}`;
  const requests: string[] = [];
  const server = http.createServer(async (req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const host = req.headers.host;
    if (req.url?.startsWith("/token")) {
      if (
        opts.basic &&
        req.headers.authorization !== `Basic ${Buffer.from(opts.basic).toString("base64")}`
      ) {
        res.writeHead(401).end("bad credentials");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token }));
      return;
    }
    if (req.headers.authorization !== `Bearer ${token}`) {
      res
        .writeHead(401, {
          "www-authenticate": `Bearer realm="http://${host}/token",service="test-registry",scope="repository:x:pull"`,
        })
        .end();
      return;
    }
    const upstreamResponse = await fetch(`${upstream}${req.url}`, {
      headers: { accept: req.headers.accept ?? "*/*" },
    });
    const headers: Record<string, string> = {};
    upstreamResponse.headers.forEach((v, k) => {
      if (k !== "content-length" && k !== "transfer-encoding" && k !== "content-encoding")
        headers[k] = v;
    });
    let body = Buffer.from(await upstreamResponse.arrayBuffer());
    if (opts.corruptBlobs && req.url?.includes("/blobs/") && body.length > 0) {
      body = Buffer.from(body);
      body[body.length - 1] = body[body.length - 1]! ^ 0xff;
    }
    res.writeHead(upstreamResponse.status, headers).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
