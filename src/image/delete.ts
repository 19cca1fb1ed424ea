import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { dropSnapshotsOf } from "../snapshot/dependents.js";
import type { ImageContext } from "./context.js";

/**
 * `image delete`: the row, and the files when banger manages them; refused while a VM or a user
 * snapshot uses it (its boot snapshots go with it).
 */
export async function deleteImage(ctx: ImageContext, name: string): Promise<{ deleted: string }> {
  const row = ctx.row(name);
  const users = ctx.deps.store.listVms().filter((v) => v.imageId === row.id);
  if (users.length > 0) {
    throw new BangerError(
      ErrorCode.InvalidState,
      `image "${name}" is used by VM(s) ${users.map((v) => v.name).join(", ")}`,
      "delete those VMs first ('banger vm delete <name>')",
    );
  }
  await dropSnapshotsOf(
    ctx.deps.store,
    ctx.deps.layout,
    { kind: "image", name },
    (s) => s.imageId === row.id,
  );
  ctx.deps.store.deleteImage(row.id);
  if (row.managed) await fsp.rm(path.dirname(row.rootfsPath), { recursive: true, force: true });
  return { deleted: name };
}
