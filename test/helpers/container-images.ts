import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { makeLayer } from "./layer.js";
import { pushImage, type TestRegistry } from "./registry.js";

const run = promisify(execFile);

/**
 * Container images banger has no say in, from apt only, for tests and benchmarks: a
 * busybox-only image (the host's static busybox and nothing else: no libc, no /etc/passwd,
 * no init) and a Debian minbase (mmdebstrap --variant=minbase: no systemd, sshd or ip).
 */

/** One layer holding /bin/busybox. */
export async function busyboxOnlyLayer(): Promise<Buffer> {
  return makeLayer([
    { name: "bin/", type: "directory" },
    { name: "bin/busybox", body: await fs.readFile("/bin/busybox"), mode: 0o755 },
  ]);
}

/**
 * Pushes a busybox image whose /bin/sh is busybox (what a Dockerfile's RUN needs: buildah runs
 * `/bin/sh -c`) as test/base:1, with the diff_ids builders check; returns its reference.
 */
export async function pushShellBase(registry: TestRegistry): Promise<string> {
  const layer = await makeLayer([
    { name: "bin/", type: "directory" },
    { name: "bin/busybox", body: await fs.readFile("/bin/busybox"), mode: 0o755 },
    { name: "bin/sh", type: "symlink", linkname: "busybox" },
  ]);
  await pushImage(registry.url, "test/base", "1", [layer], { diffIds: true });
  return `${registry.host}/test/base:1`;
}

/** A bookworm minbase rootfs as one uncompressed layer (a minute or two; Debian's packages). */
export async function minbaseLayer(workDir: string): Promise<Buffer> {
  const tar = path.join(workDir, "minbase.tar");
  await run(
    "mmdebstrap",
    [
      "--variant=minbase",
      `--mode=${process.getuid?.() === 0 ? "root" : "unshare"}`,
      "--dpkgopt=path-exclude=/usr/share/man/*",
      "--dpkgopt=path-exclude=/usr/share/doc/*",
      "bookworm",
      tar,
      ...(process.env.BANGER_DEBIAN_MIRROR ? [process.env.BANGER_DEBIAN_MIRROR] : []),
    ],
    { timeout: 900_000, maxBuffer: 64 * 2 ** 20 },
  );
  try {
    return await fs.readFile(tar);
  } finally {
    await fs.rm(tar, { force: true });
  }
}

/**
 * Pushes both to the registry as test/busybox:1 and test/minbase:1, with the diff_ids real
 * images have (skopeo's docker-archive of them needs them); returns their references.
 */
export async function pushContainerImages(
  registry: TestRegistry,
  workDir: string,
): Promise<{ busybox: string; minbase: string }> {
  const real = { diffIds: true };
  await pushImage(registry.url, "test/busybox", "1", [await busyboxOnlyLayer()], real);
  await pushImage(registry.url, "test/minbase", "1", [await minbaseLayer(workDir)], real);
  return {
    busybox: `${registry.host}/test/busybox:1`,
    minbase: `${registry.host}/test/minbase:1`,
  };
}
