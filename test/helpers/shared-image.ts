import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { TempLayout } from "./temp-home.js";
import { joinVmLane } from "./vm-lane.js";

const run = promisify(execFile);
const banger = path.resolve(fileURLToPath(new URL("../../bin/banger", import.meta.url)));

/** The name of the VM the first run creates in the shared home (deleted once recorded). */
export const FIRST_RUN_VM = "first-run";

/**
 * What the run's one build from nothing left: the default image and kernel, and a record of
 * the first-run path that made them (test/image-build.test.ts checks it).
 */
export interface SharedDefaults {
  rootfs: string;
  kernelDir: string;
  /** The shared BANGER_HOME the first run happened in. */
  home: string;
  firstRun: {
    /** What `banger vm create` printed on its terminal (a pty), CR-LF made LF. */
    transcript: string;
    code: number;
    /** `vm show --json` of the VM it created. */
    vm: { name: string; state: string; image: string | null; kernel: string | null };
  };
  /** `image list --json`'s entry for the built image. */
  image: {
    id: string;
    name: string;
    kernel: string | null;
    rootfsPath: string;
    source: string | null;
    managed: boolean;
  };
  /** `kernel show --json` of the derived kernel. */
  kernel: { name: string; version: string | null; source: string | null; dir: string };
}

/**
 * Gives a test home the default kernel and image without building them again.
 * `make test` sets BANGER_TEST_SHARED to a fresh directory per run: the first
 * test file to ask builds both there, later ones import the kernel and register
 * the image (no copy) in seconds. Without the variable nothing happens and the
 * home's first `vm create` builds them, as on a user's machine.
 * Either way the file has asked for a kernel and image to boot: it joins the VM lane.
 */
export async function useSharedDefaultImage(home: TempLayout): Promise<void> {
  await joinVmLane();
  if (!process.env.BANGER_TEST_SHARED) return;
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

/**
 * The run's shared default image and kernel, built on first use; null outside `make test`.
 * They are built the way a new user gets them: a fresh home's first `vm create` (on a
 * terminal, so its progress is recorded) derives the kernel and builds the image. That is
 * the suite's one build from nothing. The caller joins the VM lane first (test/helpers/vm-lane.ts),
 * so the build runs beside no VM.
 */
export async function sharedDefaultImage(
  baseEnv: NodeJS.ProcessEnv,
  shared: string | undefined = process.env.BANGER_TEST_SHARED,
): Promise<SharedDefaults | null> {
  await joinVmLane();
  if (!shared) return null;
  const ready = path.join(shared, "ready.json");
  const failed = path.join(shared, "failed.txt");
  const lock = path.join(shared, "lock");
  // User-mode networking whoever asks first: the shared home's daemon must not touch a bridge.
  const env = { ...baseEnv, BANGER_HOME: path.join(shared, "home"), BANGER_NETWORK: "user" };
  const deadline = Date.now() + 1_200_000;
  while (!(await exists(ready))) {
    // One failed build fails every later file at once instead of each building again.
    const failure = await fs.readFile(failed, "utf8").catch(() => null);
    if (failure !== null) throw new Error(`the shared default image failed to build:\n${failure}`);
    const mine = await fs.mkdir(lock).then(
      () => true,
      () => false,
    );
    if (mine) {
      try {
        await writeAtomic(ready, JSON.stringify(await firstRun(shared, env)));
      } catch (err) {
        await fs.writeFile(failed, (err as Error).message).catch(() => undefined);
        throw err;
      } finally {
        await run(banger, ["daemon", "stop"], { env }).catch(() => undefined);
        await fs.rm(lock, { recursive: true, force: true });
      }
      break;
    }
    if (Date.now() > deadline) throw new Error(`${lock} held too long`);
    await new Promise((r) => setTimeout(r, 1000));
  }
  return JSON.parse(await fs.readFile(ready, "utf8")) as SharedDefaults;
}

/**
 * For a test that needs the shared defaults even when run on its own: outside `make test`
 * it builds them in a shared dir of its own; `release` removes it (and its daemon) again.
 */
export async function ownSharedDefaults(
  baseEnv: NodeJS.ProcessEnv,
): Promise<{ shared: SharedDefaults; release: () => Promise<void> }> {
  const made = process.env.BANGER_TEST_SHARED
    ? null
    : await fs.mkdtemp(path.join(os.tmpdir(), "banger-test-shared-"));
  const release = async () => {
    if (!made) return;
    await run(banger, ["daemon", "stop"], {
      env: { ...baseEnv, BANGER_HOME: path.join(made, "home") },
      timeout: 60_000,
    }).catch(() => undefined);
    await fs.rm(made, { recursive: true, force: true });
  };
  try {
    const shared = await sharedDefaultImage(baseEnv, made ?? process.env.BANGER_TEST_SHARED);
    return { shared: shared!, release };
  } catch (err) {
    await release();
    throw err;
  }
}

/** A fresh home's first `vm create`, on a pty as a user runs it, then what it made. */
async function firstRun(shared: string, env: NodeJS.ProcessEnv): Promise<SharedDefaults> {
  // script(1) gives the CLI a terminal, so it renders its progress (it prints none to a pipe).
  const { code, output } = await captured(
    "script",
    [
      "-qefc",
      `"$BANGER_BIN" vm create --name ${FIRST_RUN_VM} --no-start --disk-size 1G </dev/null`,
      "/dev/null",
    ],
    { ...env, BANGER_BIN: banger },
    1_080_000,
  );
  const transcript = output.replace(/\r\n/g, "\n");
  await fs.writeFile(path.join(shared, "first-run.log"), transcript);
  if (code !== 0)
    throw new Error(`the first vm create exited ${code}:\n${transcript.slice(-4000)}`);
  const json = async <T>(...args: string[]): Promise<T> =>
    JSON.parse((await run(banger, args, { env, timeout: 60_000 })).stdout) as T;
  const vm = await json<SharedDefaults["firstRun"]["vm"]>("vm", "show", FIRST_RUN_VM, "--json");
  await run(banger, ["vm", "delete", FIRST_RUN_VM], { env, timeout: 60_000 });
  const images = await json<Array<SharedDefaults["image"]>>("image", "list", "--json");
  const image = images.find((i) => i.name === "debian-bookworm");
  if (!image) throw new Error(`the first vm create built no debian-bookworm:\n${transcript}`);
  const kernel = await json<SharedDefaults["kernel"]>("kernel", "show", "debian-cloud", "--json");
  return {
    rootfs: image.rootfsPath,
    kernelDir: kernel.dir,
    home: env.BANGER_HOME!,
    firstRun: { transcript, code, vm },
    image,
    kernel,
  };
}

/** Runs a command with stdin closed; its exit code and combined output, killed at the bound. */
function captured(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), output });
    });
  });
}

async function writeAtomic(file: string, data: string): Promise<void> {
  await fs.writeFile(`${file}.tmp`, data);
  await fs.rename(`${file}.tmp`, file);
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}
