import { randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { hasExt4Magic } from "../disk/ext4.js";
import type { ImageRow } from "../store/store.js";
import type { CommandRunner } from "../system/runner.js";
import type { ImageContext } from "./context.js";
import { imageInfo } from "./model.js";

export interface RegisterRequest {
  name: string;
  rootfs: string;
  kernelRef?: string | undefined;
  kernel?: string | undefined;
  initrd?: string | undefined;
  modules?: string | undefined;
}

/** `image register`: an existing ext4 file in place (unmanaged: banger never deletes the file). */
export async function registerImage(ctx: ImageContext, req: RegisterRequest): Promise<ImageInfo> {
  if (req.kernelRef && (req.kernel || req.initrd || req.modules)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      "--kernel-ref and --kernel/--initrd/--modules are mutually exclusive",
      "name a kernel banger has, or give the kernel files, not both",
    );
  }
  if (!req.kernelRef && !req.kernel) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      "register needs a kernel: --kernel-ref <name> or --kernel <file>",
      "'banger kernel list' shows the kernels banger has",
    );
  }
  if ((req.initrd || req.modules) && !req.kernel) {
    throw new BangerError(ErrorCode.InvalidParams, "--initrd and --modules go with --kernel");
  }
  const rootfs = path.resolve(req.rootfs);
  await checkRegisterable(rootfs, ctx.deps.runner);
  return ctx.exclusive(req.name, async () => {
    let kernelRef = req.kernelRef;
    if (kernelRef) {
      if (!ctx.deps.store.getKernel(kernelRef)) {
        throw new BangerError(
          ErrorCode.NotFound,
          `no kernel named ${JSON.stringify(kernelRef)}`,
          `'banger kernel list' shows what exists; 'banger kernel pull ${DISTRO_KERNEL_NAME}' gets the default`,
        );
      }
    } else {
      // Loose kernel files become a kernel of their own, named after the image.
      kernelRef = `${req.name}-kernel`;
      // Each file is checked (regular, not a FIFO or device) as it is copied.
      await ctx.deps.kernels.importFiles(kernelRef, {
        kernel: req.kernel!,
        initrd: req.initrd,
        modules: req.modules,
      });
    }
    const row: ImageRow = {
      id: randomBytes(6).toString("hex"),
      name: req.name,
      kernelRef,
      rootfsPath: rootfs,
      source: `file:${rootfs}`,
      digest: null,
      sizeBytes: (await fsp.stat(rootfs)).size,
      managed: false,
      createdAt: ctx.now(),
      // A finished filesystem from the user: it boots its own /sbin/init, as it always did.
      init: null,
      config: null,
    };
    ctx.deps.store.insertImage(row);
    return imageInfo(row);
  });
}

/**
 * `image register` takes a regular file holding a whole ext2/3/4 filesystem: the magic
 * alone is not one, and a FIFO or device must never be opened (a FIFO would block).
 */
async function checkRegisterable(rootfs: string, runner: CommandRunner): Promise<void> {
  const refuse = (why: string, hint?: string) =>
    new BangerError(
      ErrorCode.InvalidParams,
      `cannot register ${rootfs}: ${why}`,
      hint ?? "give the path of an ext4 filesystem image file (e.g. made by mkfs.ext4)",
    );
  let stat: fs.Stats;
  try {
    stat = await fsp.stat(rootfs);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw refuse("no such file");
    if (code === "EACCES")
      throw refuse("permission denied", "the daemon must be able to read the file");
    if (code === "ELOOP") throw refuse("too many levels of symlinks");
    throw refuse(`cannot stat it (${code ?? String(err)})`);
  }
  if (stat.isDirectory()) throw refuse("it is a directory, not an image file");
  if (!stat.isFile()) throw refuse("it is not a regular file (a device, FIFO or socket)");
  if (stat.size < 64 * 1024)
    throw refuse(`it is too small (${stat.size} bytes) to be a filesystem`);
  // O_NONBLOCK: should the path turn into a FIFO after the stat, opening it does not hang.
  const handle = await fsp
    .open(rootfs, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    .catch((err: NodeJS.ErrnoException) => {
      throw refuse(err.code === "EACCES" ? "permission denied" : `cannot open it (${err.code})`);
    });
  await handle.close();
  if (!(await hasExt4Magic(rootfs)))
    throw refuse("it is not an ext4 filesystem image (no ext4 superblock)");
  // The magic is two bytes; dumpe2fs reads the whole superblock and its group descriptors.
  const check = await runner.run("dumpe2fs", ["-h", rootfs], { timeoutMs: 30_000 });
  if (check.code !== 0) {
    const why = check.stderr
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !/^dumpe2fs [\d.]+ \(/.test(l))
      .map((l) => l.replace(/^dumpe2fs: /, "").replace(/ while trying to open .*$/, ""))[0];
    throw refuse(
      `it is not a valid ext4 filesystem (${why ?? "dumpe2fs failed"})`,
      "check it with 'e2fsck -n -f <file>'",
    );
  }
  const blocks = Number(/^Block count:\s+(\d+)/m.exec(check.stdout)?.[1] ?? NaN);
  const blockSize = Number(/^Block size:\s+(\d+)/m.exec(check.stdout)?.[1] ?? NaN);
  if (!(blocks > 0 && blockSize > 0))
    throw refuse("it is not a valid ext4 filesystem (no block count in its superblock)");
  if (blocks * blockSize > stat.size)
    throw refuse(
      `it is truncated: its superblock says ${blocks * blockSize} bytes, the file has ${stat.size}`,
      "check it with 'e2fsck -n -f <file>'",
    );
}
