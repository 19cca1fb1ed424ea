import type { VmInfo } from "../api/methods.js";
import type { Progress } from "../image/service.js";
import { notRunning, type VmContext } from "./context.js";
import { startVm } from "./start.js";
import { shutdown } from "./teardown.js";

/** Graceful stop: the guest powers off, the VMM is stopped at [timeouts] stop at the latest. */
export function stopVm(ctx: VmContext, name: string): Promise<VmInfo> {
  return ctx.withVmLock(name, async (row) => {
    if (row.state !== "running") throw notRunning(name);
    await shutdown(ctx, row, "graceful");
    return ctx.info(ctx.row(name));
  });
}

export function killVm(ctx: VmContext, name: string): Promise<VmInfo> {
  return ctx.withVmLock(name, async (row) => {
    await shutdown(ctx, row, "kill");
    return ctx.info(ctx.row(name));
  });
}

export async function restartVm(
  ctx: VmContext,
  name: string,
  progress: Progress = () => {},
  signal?: AbortSignal,
): Promise<VmInfo> {
  const row = ctx.row(name);
  if (row.state === "running") await stopVm(ctx, name);
  return startVm(ctx, name, progress, signal);
}
