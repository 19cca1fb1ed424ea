import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import { publishDir } from "../util/bundle-fetch.js";
import type { ImageContext } from "./context.js";
import { imageInfo } from "./model.js";

/** `image promote`: copies a registered image's file into banger's store, so it no longer depends on the original. */
export async function promoteImage(ctx: ImageContext, name: string): Promise<ImageInfo> {
  const row = ctx.row(name);
  if (row.managed)
    throw new BangerError(ErrorCode.InvalidState, `image "${name}" is already managed by banger`);
  const finalDir = path.join(ctx.deps.layout.imagesDir, row.id);
  const staging = `${finalDir}.staging`;
  await fsp.mkdir(staging, { recursive: true });
  try {
    // FICLONE: instant on reflink filesystems, a plain copy elsewhere.
    await fsp.copyFile(
      row.rootfsPath,
      path.join(staging, "rootfs.ext4"),
      fs.constants.COPYFILE_FICLONE,
    );
    await publishDir(staging, finalDir, { replace: false });
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
  const rootfs = path.join(finalDir, "rootfs.ext4");
  ctx.deps.store.updateImageRootfs(row.id, rootfs, true);
  return imageInfo({ ...row, rootfsPath: rootfs, managed: true });
}
