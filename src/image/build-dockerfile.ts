import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import { describeKind } from "../util/regular-file.js";
import {
  buildWithBuildah,
  noBuildahError,
  rootlessHint,
  rootlessProblem,
} from "./build/buildah.js";
import type { ImageContext } from "./context.js";
import { archiveIntoStaging } from "./import.js";
import type { Progress } from "./model.js";

export interface DockerfileBuildRequest {
  name: string;
  /** Absolute path of the Dockerfile. */
  file: string;
  /** Absolute path of the build context; default: the Dockerfile's directory. */
  context?: string | undefined;
  buildArgs?: string[] | undefined;
  insecureRegistry?: boolean | undefined;
  kernelRef?: string | undefined;
  sizeBytes?: number | undefined;
}

// What docker and buildah accept as an ARG name.
const BUILD_ARG = /^[A-Za-z_][A-Za-z0-9_]*=/;

/**
 * `image build -f`: buildah builds the Dockerfile in storage of its own inside the staging dir,
 * writes the result there as an OCI layout, and the import path takes it from there. RUN runs
 * on this host (chroot isolation is not a sandbox): the user builds their own Dockerfile.
 */
export async function buildFromDockerfile(
  ctx: ImageContext,
  req: DockerfileBuildRequest,
  progress: Progress,
  signal?: AbortSignal,
): Promise<ImageInfo> {
  const context = req.context ?? path.dirname(req.file);
  await checkPath(req.file, "the Dockerfile", "file");
  await checkPath(context, "the build context", "directory");
  for (const arg of req.buildArgs ?? []) {
    if (!BUILD_ARG.test(arg))
      throw new BangerError(
        ErrorCode.InvalidParams,
        `invalid --build-arg ${JSON.stringify(arg)}`,
        "give NAME=VALUE, e.g. --build-arg VERSION=1.2",
      );
  }
  if (!(await ctx.deps.runner.which("buildah"))) throw noBuildahError();
  if (!(ctx.deps.isRoot ?? process.getuid?.() === 0)) await checkRootless();
  return ctx.exclusive(req.name, async () => {
    const limits = await ctx.limits();
    return ctx.create(req.name, async (staging) => {
      const output = path.join(staging, "oci");
      progress({ stage: "build", message: `buildah: ${req.file}` });
      await buildWithBuildah({
        runner: ctx.deps.runner,
        workDir: path.join(staging, "buildah"),
        output,
        dockerfile: req.file,
        context,
        buildArgs: req.buildArgs ?? [],
        insecureRegistry: req.insecureRegistry ?? false,
        env: ctx.deps.env,
        progress: (message) => progress({ stage: "build", message }),
        signal,
      });
      return archiveIntoStaging(
        ctx,
        staging,
        {
          path: output,
          what: `the image buildah built from ${req.file}`,
          kernelRef: req.kernelRef,
          sizeBytes: req.sizeBytes,
          source: () => `dockerfile:${req.file}`,
        },
        limits,
        progress,
        signal,
      );
    });
  });
}

/** A non-root daemon builds rootless: refused up front when the user has no subordinate ids. */
async function checkRootless(): Promise<void> {
  const read = (f: string) => fsp.readFile(f, "utf8").catch(() => "");
  const user = { name: os.userInfo().username, uid: process.getuid?.() ?? 0 };
  const why = rootlessProblem(user, {
    subuid: await read("/etc/subuid"),
    subgid: await read("/etc/subgid"),
  });
  if (why) throw new BangerError(ErrorCode.Precondition, why, rootlessHint(user.name));
}

async function checkPath(p: string, what: string, want: "file" | "directory"): Promise<void> {
  if (!path.isAbsolute(p))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} ${JSON.stringify(p)} is not an absolute path`,
      "the CLI resolves paths for you; callers of the RPC must send absolute ones",
    );
  // The user named it: a symlink is followed, like docker build does.
  const stat = await fsp.stat(p).catch(() => null);
  if (!stat)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} ${p} does not exist`,
      want === "file"
        ? "give the Dockerfile's path with -f, e.g. -f ./Dockerfile"
        : "give an existing directory as the context (default: the Dockerfile's directory)",
    );
  if (want === "file" && !stat.isFile())
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} ${p} is ${describeKind(stat)}, not a regular file`,
      "give the Dockerfile's path with -f; the context is the argument after it",
    );
  if (want === "directory" && !stat.isDirectory())
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} ${p} is not a directory`,
      "give a directory as the context (default: the Dockerfile's directory)",
    );
}
