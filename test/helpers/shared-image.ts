import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { TempLayout } from "./temp-home.js";

const run = promisify(execFile);
const banger = path.resolve(fileURLToPath(new URL("../../bin/banger", import.meta.url)));

/**
 * Gives a test home the default kernel and image without building them again.
 * `make test` sets BANGER_TEST_SHARED to a fresh directory per run: the first
 * test file to ask builds both there (real mmdebstrap, real kernel derivation),
 * later ones import the kernel and register the image (no copy) in seconds.
 * Without the variable nothing happens and the first `vm create` builds them,
 * as on a user's machine; test/e2e/vm-lifecycle.test.ts always takes that path.
 */
export async function useSharedDefaultImage(home: TempLayout): Promise<void> {
  const shared = await sharedDefaultImage(home.env);
  if (!shared) return;
  await run(banger, ["kernel", "import", "debian-cloud", "--from", shared.kernelDir], {
    env: home.env,
  });
  await run(
    banger,
    [
      "image",
      "register",
      "--rootfs",
      shared.rootfs,
      "--name",
      "debian-bookworm",
      "--kernel-ref",
      "debian-cloud",
    ],
    { env: home.env },
  );
}

/** The run's shared default image and kernel dir, built on first use; null outside `make test`. */
export async function sharedDefaultImage(
  baseEnv: NodeJS.ProcessEnv,
): Promise<{ rootfs: string; kernelDir: string } | null> {
  const shared = process.env.BANGER_TEST_SHARED;
  if (!shared) return null;
  const ready = path.join(shared, "ready.json");
  const lock = path.join(shared, "lock");
  const env = { ...baseEnv, BANGER_HOME: path.join(shared, "home") };
  const deadline = Date.now() + 600_000;
  while (!(await exists(ready))) {
    const mine = await fs.mkdir(lock).then(
      () => true,
      () => false,
    );
    if (mine) {
      try {
        await run(banger, ["kernel", "pull", "debian-cloud"], { env, timeout: 300_000 });
        await run(banger, ["image", "build"], { env, timeout: 600_000 });
        const images = JSON.parse(
          (await run(banger, ["image", "list", "--json"], { env })).stdout,
        ) as Array<{ name: string; rootfsPath: string }>;
        const image = images.find((i) => i.name === "debian-bookworm");
        if (!image) throw new Error("the shared default image was not built");
        const kernel = JSON.parse(
          (await run(banger, ["kernel", "show", "debian-cloud", "--json"], { env })).stdout,
        ) as { dir: string };
        await fs.writeFile(
          ready,
          JSON.stringify({ rootfs: image.rootfsPath, kernelDir: kernel.dir }),
        );
      } finally {
        await run(banger, ["daemon", "stop"], { env }).catch(() => undefined);
        await fs.rm(lock, { recursive: true, force: true });
      }
      break;
    }
    if (Date.now() > deadline) throw new Error(`${lock} held too long`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  return JSON.parse(await fs.readFile(ready, "utf8")) as { rootfs: string; kernelDir: string };
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
