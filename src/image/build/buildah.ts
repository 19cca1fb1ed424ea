import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";
import { removeTree } from "../../util/remove-tree.js";
import { tailLines, visibleLines } from "../../util/terminal-text.js";

/** The apt package that provides the builder banger runs for `image build -f`. */
export const BUILDAH_PACKAGE = "buildah";

export interface BuildahBuild {
  runner: CommandRunner;
  /** Buildah's storage, config and temp files for this build alone; removed before returning. */
  workDir: string;
  /** Where the built image is written, as an OCI layout directory. */
  output: string;
  dockerfile: string;
  context: string;
  /** `--build-arg` values, KEY=VALUE each. */
  buildArgs: string[];
  /** Plain HTTP (or unverified TLS) for the registries FROM names. */
  insecureRegistry: boolean;
  env: NodeJS.ProcessEnv;
  /** Each line buildah prints (its steps, what RUN prints, pulls), as it arrives. */
  progress: (line: string) => void;
  signal?: AbortSignal | undefined;
}

// What an error quotes of each of buildah's streams: enough to see the failing step and why.
// Two tails, not one: the pipes are read independently, so stdout lines arriving after the
// error lines must not push those out of a shared window.
const TAIL_LINES = { stdout: 15, stderr: 12 } as const;
const TAIL_CHARS = 2000;

/** The error for a missing buildah: what to install, and that nothing else needs it. */
export function noBuildahError(): BangerError {
  return new BangerError(
    ErrorCode.Precondition,
    "image build -f needs Buildah, which is not installed",
    `install the ${BUILDAH_PACKAGE} package (sudo apt-get install ${BUILDAH_PACKAGE}); 'banger doctor' shows which builder banger finds`,
  );
}

/**
 * Why a rootless Buildah (a daemon that is not root) cannot build for this user, or null. It
 * maps the build's users onto the user's subordinate ids; without a range in both /etc/subuid
 * and /etc/subgid every RUN fails with "error setting supplemental groups list".
 */
export function rootlessProblem(
  user: { name: string; uid: number },
  files: { subuid: string; subgid: string },
): string | null {
  const hasRange = (text: string) =>
    text.split("\n").some((line) => {
      const [who, start, count] = line.trim().split(":");
      return (
        (who === user.name || who === String(user.uid)) &&
        /^\d+$/.test(start ?? "") &&
        /^[1-9]\d*$/.test(count ?? "")
      );
    });
  const missing = (["subuid", "subgid"] as const).filter((f) => !hasRange(files[f]));
  if (missing.length === 0) return null;
  return `image build -f runs Buildah rootless for ${user.name}, which needs subordinate ids: ${missing.map((f) => `/etc/${f}`).join(" and ")} ${missing.length > 1 ? "have" : "has"} no range for ${user.name}`;
}

/** The hint that goes with rootlessProblem: how to give the user a range. */
export function rootlessHint(name: string): string {
  return `sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${name}`;
}

/**
 * `buildah bud --isolation chroot` in storage of its own under `workDir` (vfs: nothing is
 * mounted, so a killed build leaves only files), never the user's containers storage or
 * config; the result is pushed to `output` as an OCI layout. Whatever happens, buildah's
 * containers and images are removed and `workDir` with them.
 */
export async function buildWithBuildah(b: BuildahBuild): Promise<void> {
  const storage = await prepareStorage(b.workDir);
  const tag = `localhost/banger-build-${randomBytes(6).toString("hex")}`;
  const recent: Recent = { stdout: [], stderr: [] };
  const keep = (stream: keyof Recent) => (line: string) => {
    recent[stream].push(line);
    if (recent[stream].length > TAIL_LINES[stream]) recent[stream].shift();
    b.progress(line);
  };
  // The build's steps stream; what the clean-up prints (untagged ..., ids) is nobody's progress.
  const run = (args: string[], timeoutMs: number, mode: "build" | "cleanup") =>
    b.runner.run("buildah", [...storage.flags, ...args], {
      env: { ...b.env, ...storage.env },
      timeoutMs,
      maxOutputBytes: 64 * 1024 * 1024,
      ...(mode === "build"
        ? {
            onStdoutLine: keep("stdout"),
            onStderrLine: keep("stderr"),
            ...(b.signal ? { signal: b.signal } : {}),
          }
        : {}),
    });
  try {
    const bud = await run(
      [
        "bud",
        "--isolation",
        "chroot",
        "--layers=false",
        `--tls-verify=${b.insecureRegistry ? "false" : "true"}`,
        ...b.buildArgs.flatMap((a) => ["--build-arg", a]),
        "-f",
        b.dockerfile,
        "-t",
        tag,
        b.context,
      ],
      60 * 60_000,
      "build",
    );
    checkCancelled(b.signal);
    if (bud.code !== 0) throw failed("the Dockerfile build", bud, recent);
    // Uncompressed: the import reads the layers once, right away; gzip would only cost time.
    const push = await run(
      ["push", "--disable-compression", tag, `oci:${b.output}`],
      30 * 60_000,
      "build",
    );
    checkCancelled(b.signal);
    if (push.code !== 0) throw failed("writing the built image", push, recent);
  } finally {
    // Not under the caller's signal ("cleanup"): a cancelled build is cleaned up all the same.
    await run(["rm", "--all"], 120_000, "cleanup").catch(() => undefined);
    await run(["rmi", "--all", "--force"], 120_000, "cleanup").catch(() => undefined);
    // The staging dir's removal tries again; the build's own error matters more than this one.
    await removeTree(b.workDir).catch(() => undefined);
  }
}

/** Storage flags, and config files that keep the user's (and the system's) out of the build. */
async function prepareStorage(
  workDir: string,
): Promise<{ flags: string[]; env: NodeJS.ProcessEnv }> {
  const root = path.join(workDir, "root");
  const runroot = path.join(workDir, "runroot");
  const tmp = path.join(workDir, "tmp");
  for (const dir of [root, runroot, tmp]) await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  const storageConf = path.join(workDir, "storage.conf");
  await fsp.writeFile(
    storageConf,
    `[storage]\ndriver = "vfs"\nrunroot = ${JSON.stringify(runroot)}\ngraphroot = ${JSON.stringify(root)}\n`,
  );
  // FROM debian:bookworm means Docker Hub, as it does for docker build and banger's pull.
  const registriesConf = path.join(workDir, "registries.conf");
  await fsp.writeFile(
    registriesConf,
    'unqualified-search-registries = ["docker.io"]\nshort-name-mode = "permissive"\n',
  );
  return {
    flags: ["--root", root, "--runroot", runroot, "--storage-driver", "vfs"],
    env: {
      CONTAINERS_STORAGE_CONF: storageConf,
      CONTAINERS_REGISTRIES_CONF: registriesConf,
      TMPDIR: tmp,
    },
  };
}

function checkCancelled(signal: AbortSignal | undefined): void {
  if (signal?.aborted)
    throw new BangerError(ErrorCode.Cancelled, "the Dockerfile build was cancelled");
}

/** The last lines of each stream, kept for the error. */
interface Recent {
  stdout: string[];
  stderr: string[];
}

/** The failure with the build's last lines (its own output: escaped, bounded). */
function failed(
  what: string,
  result: { code: number | null; signal: string | null; timedOut?: boolean },
  recent: Recent,
): BangerError {
  const status = result.timedOut
    ? "timed out"
    : result.signal
      ? `was killed by ${result.signal}`
      : `exited with status ${result.code}`;
  const tail = (stream: keyof Recent) =>
    visibleLines(tailLines(recent[stream].join("\n"), TAIL_LINES[stream], TAIL_CHARS));
  const out = tail("stdout");
  const err = tail("stderr");
  return new BangerError(
    ErrorCode.Precondition,
    `${what} failed (buildah ${status})` +
      (out ? `; its output ended:\n${out}` : "") +
      (err ? `\n${out ? "and its errors:" : "its errors:"}\n${err}` : ""),
    failureHint(err),
  );
}

/** What to do next: a FROM that could not be fetched is not the Dockerfile's fault. */
function failureHint(tail: string): string {
  if (/server gave HTTP response to HTTPS client/.test(tail))
    return "a registry FROM names speaks plain HTTP: pass --insecure-registry; nothing was kept";
  if (/pinging container registry|initializing source|reading manifest/.test(tail))
    return "FROM's image could not be fetched: check its reference and that its registry is reachable; nothing was kept";
  return "fix the step the output names and build again; nothing was kept";
}
