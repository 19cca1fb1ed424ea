import { loadConfig } from "../config/config.js";
import { DEFAULT_CONSOLE_LOG_BYTES } from "../vmm/console-log.js";
import type { VmContext } from "./context.js";
import { releaseDead } from "./teardown.js";

/**
 * Start-up reconcile: adopt VMs whose VMM still runs (they outlive the daemon);
 * demote the rest to stopped and forget their handles.
 */
export async function reconcileVms(ctx: VmContext): Promise<void> {
  const log = ctx.deps.log;
  for (const row of ctx.deps.store.listVms()) {
    if (row.state !== "running") {
      await killStray(ctx, row.name, row.vmm, ctx.dirOf(row.id));
      continue;
    }
    const handles = await ctx.handlesOf(row);
    const driver = handles ? ctx.driverFor(handles.vmm) : null;
    if (handles && driver && (await driver.status(handles)) === "running") {
      ctx.handles.set(row.id, handles);
      const consoleBytes = await loadConfig(ctx.deps.layout.configFile).then(
        (c) => c.consoleLogBytes,
        () => DEFAULT_CONSOLE_LOG_BYTES,
      );
      await driver
        .adopt?.(handles, consoleBytes)
        .catch((err: unknown) =>
          log?.error({ err, vm: row.name }, "could not take the console back"),
        );
      for (const network of ctx.networks) await network.adoptVm(row, handles, ctx.dirOf(row.id));
      log?.info({ vm: row.name, pid: handles.pid }, "adopted running VM");
      continue;
    }
    await releaseDead(ctx, row, handles);
    await killStray(ctx, row.name, row.vmm, ctx.dirOf(row.id));
    log?.info({ vm: row.name }, "VM was not running any more: marked stopped");
  }
}

/** A VMM a killed daemon started for this VM but never recorded (it was loading or booting). */
async function killStray(
  ctx: VmContext,
  name: string,
  vmm: string | null,
  dir: string,
): Promise<void> {
  let driver;
  try {
    driver = ctx.driverFor(vmm);
  } catch {
    return; // that VMM is not available here: nothing of it can run
  }
  const killed = await driver.killStray?.(dir).catch((err: unknown) => {
    ctx.deps.log?.error({ err, vm: name }, "could not check for a stray VMM");
    return false;
  });
  if (killed) ctx.deps.log?.info({ vm: name }, "killed a VMM no handles recorded");
}
