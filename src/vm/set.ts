import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { checkVmShape } from "../config/limits.js";
import type { VmContext } from "./context.js";

/** vcpu/memory of a stopped VM; they apply at the next start. */
export function setVm(
  ctx: VmContext,
  name: string,
  change: { vcpu?: number | undefined; memoryBytes?: number | undefined },
): Promise<VmInfo> {
  return ctx.withVmLock(name, async (row) => {
    if (row.state === "running")
      throw new BangerError(
        ErrorCode.InvalidState,
        `VM ${name} is running`,
        `stop it first: 'banger vm stop ${name}'`,
      );
    checkVmShape(change, ctx.deps.host);
    ctx.deps.store.updateVm(row.id, {
      ...(change.vcpu !== undefined ? { vcpu: change.vcpu } : {}),
      ...(change.memoryBytes !== undefined ? { memoryBytes: change.memoryBytes } : {}),
    });
    return ctx.info(ctx.row(name));
  });
}
