import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { KernelInfo } from "../api/methods.js";
import { copyRegularFile } from "../util/regular-file.js";
import type { KernelContext } from "./context.js";
import {
  checkKernelName,
  checkModulesDir,
  copyModulesTree,
  discoverKernel,
  isElf,
  KERNEL_FILES,
  type DiscoveredKernel,
} from "./kernel-dir.js";

/** `kernel import` (a directory) and `image register --kernel` (loose files) into the store. */

// Far above any real piece (a Debian vmlinuz is ~8 MiB, vmlinux ~60 MiB, an initrd tens of
// MiB): the caps only stop a huge (or sparse) file from being copied byte by byte.
const MAX_KERNEL_BYTES = 512 * 1024 ** 2;
const MAX_INITRD_BYTES = 4 * 1024 ** 3;
const MAX_CONFIG_BYTES = 16 * 1024 ** 2;

/** The daemon's working directory is not the caller's: a relative path would name the wrong file. */
function checkAbsolute(p: string, what: string): void {
  if (!path.isAbsolute(p)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} ${JSON.stringify(p)} is not an absolute path`,
      "the CLI resolves paths for you; callers of the RPC must send absolute ones",
    );
  }
}

/** Copies a kernel directory into the store under banger's fixed names. */
export async function importKernelDir(
  ctx: KernelContext,
  name: string,
  from: string,
): Promise<KernelInfo> {
  checkKernelName(name);
  checkAbsolute(from, "the kernel directory");
  return ctx.exclusive(name, async () => {
    const replace = ctx.checkReplace(name, false);
    const found = await discoverKernel(path.resolve(from));
    // discoverKernel resolved the directory; every piece must stay inside it.
    return install(
      ctx,
      name,
      found,
      await fsp.realpath(from),
      `import:${path.resolve(from)}`,
      replace,
    );
  });
}

/**
 * Installs loose kernel files the user named one by one (`image register --kernel`): each is
 * followed if it is a link (the user chose it), but must be a regular file (modules: a directory).
 */
export async function importKernelFiles(
  ctx: KernelContext,
  name: string,
  files: { kernel: string; initrd?: string | undefined; modules?: string | undefined },
): Promise<KernelInfo> {
  checkKernelName(name);
  checkAbsolute(files.kernel, "--kernel");
  if (files.initrd !== undefined) checkAbsolute(files.initrd, "--initrd");
  if (files.modules !== undefined) checkAbsolute(files.modules, "--modules");
  return ctx.exclusive(name, async () => {
    const replace = ctx.checkReplace(name, false);
    const kernel = path.resolve(files.kernel);
    const elf = await isElf(kernel, "kernel", null);
    const found = {
      vmlinux: elf ? kernel : null,
      vmlinuz: elf ? null : kernel,
      initrd: files.initrd ? path.resolve(files.initrd) : null,
      modules: files.modules ? await checkModulesDir(path.resolve(files.modules), null) : null,
      config: null,
      version: null,
      cmdline: null,
    };
    return install(ctx, name, found, null, `file:${kernel}`, replace);
  });
}

/** Copies the pieces into a staging dir under banger's fixed names, then publishes it. */
async function install(
  ctx: KernelContext,
  name: string,
  found: DiscoveredKernel,
  within: string | null,
  source: string,
  replace: boolean,
): Promise<KernelInfo> {
  await fsp.mkdir(ctx.deps.layout.kernelsDir, { recursive: true });
  const staging = `${ctx.dirFor(name)}.staging-${randomBytes(4).toString("hex")}`;
  await fsp.mkdir(staging);
  const where = within === null ? { follow: true } : { within };
  const copy = (file: string | null, to: string, what: string, maxBytes: number) =>
    file
      ? copyRegularFile(file, path.join(staging, to), what, { ...where, maxBytes })
      : Promise.resolve();
  try {
    await copy(found.vmlinux, KERNEL_FILES.vmlinux, "kernel", MAX_KERNEL_BYTES);
    await copy(found.vmlinuz, KERNEL_FILES.vmlinuz, "kernel", MAX_KERNEL_BYTES);
    await copy(found.initrd, KERNEL_FILES.initrd, "initrd", MAX_INITRD_BYTES);
    await copy(found.config, KERNEL_FILES.config, "kernel config", MAX_CONFIG_BYTES);
    if (found.modules)
      await copyModulesTree(found.modules, path.join(staging, KERNEL_FILES.modules));
    const manifest = await ctx.manifestFor(name, staging, source, found.version, found.cmdline);
    return await ctx.publish(name, staging, manifest, replace);
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}
