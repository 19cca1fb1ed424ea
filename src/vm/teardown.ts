import { defaultConfig, loadConfig } from "../config/config.js";
import { GUEST_POWEROFF_COMMAND } from "../guest/toolkit.js";
import type { VmRow } from "../store/store.js";
import type { Driver, VmHandles } from "../vmm/driver.js";
import type { VmContext } from "./context.js";

/** The longest the guest's own poweroff over SSH may take (it returns at once when the guest answers). */
const POWEROFF_SSH_MS = 10_000;

/** The driver of a VM being torn down, or null when that VMM is not available here. */
function driverIfAny(ctx: VmContext, vmm: string | null): Driver | null {
  try {
    return ctx.driverFor(vmm);
  } catch {
    return null;
  }
}

/**
 * A VM recorded as running whose VMM is gone (it exited during boot, crashed, or died
 * while the daemon was down): remove the VMM's sockets, stop its network helpers, give its
 * tap back, forget its handles and mark it stopped. Best-effort per step: a step that fails
 * is logged.
 */
export async function releaseDead(
  ctx: VmContext,
  row: VmRow,
  handles: VmHandles | null,
): Promise<void> {
  const dir = ctx.dirOf(row.id);
  const step = (what: string, p: () => Promise<unknown> | unknown) =>
    Promise.resolve()
      .then(p)
      .catch((err: unknown) => ctx.deps.log?.error({ err, vm: row.name }, what));
  const driver = driverIfAny(ctx, handles?.vmm ?? row.vmm);
  await step("could not remove the VMM's sockets", () => driver?.removeFiles(dir));
  if (handles) {
    await step("could not release the console", () =>
      ctx.driverFor(handles.vmm).release?.(handles),
    );
    for (const network of ctx.networks)
      await step("could not release the VM's network", () => network.releaseVm(handles, dir));
  }
  await ctx.writeHandles(row, null);
  ctx.deps.store.updateVm(row.id, { state: "stopped", teardownJson: null });
}

/**
 * The VMM of this VM may have exited (the daemon saw its console end, a poll or a `vm list`
 * found it gone): under the VM's lock, with the row as it is then, release it as `releaseDead`
 * does when its VMM is really gone. A start or stop in flight finishes first, and sees to
 * its own VMM. True when it released the VM. One release per VM at a time.
 */
export function releaseIfExited(ctx: VmContext, id: string): Promise<boolean> {
  const pending = ctx.exitReleases.get(id);
  if (pending) return pending;
  const release = ctx.locks
    .run(id, async () => {
      const row = ctx.deps.store.listVms().find((v) => v.id === id);
      if (!row || row.state !== "running") return false;
      const handles = await ctx.handlesOf(row);
      const driver = handles ? driverIfAny(ctx, handles.vmm) : null;
      if (handles && driver && (await driver.status(handles)) === "running") return false;
      await releaseDead(ctx, row, handles);
      ctx.deps.log?.info({ vm: row.name }, "VMM exited: VM marked stopped");
      return true;
    })
    .finally(() => ctx.exitReleases.delete(id));
  ctx.exitReleases.set(id, release);
  return release;
}

/** Stops (graceful: the guest first, then the VMM, within [timeouts] stop) or kills a VM, then releases it. */
export async function shutdown(
  ctx: VmContext,
  row: VmRow,
  mode: "graceful" | "kill",
): Promise<void> {
  const handles = await ctx.handlesOf(row);
  const dir = ctx.dirOf(row.id);
  if (handles) {
    const driver = ctx.driverFor(handles.vmm);
    if (mode === "kill") {
      await driver.kill(handles);
    } else {
      // [timeouts] stop bounds the whole graceful stop: a guest that does not answer SSH
      // (frozen, hung) must not add its own wait on top of the VMM's deadline.
      const stopMs =
        ctx.deps.stopDeadlineMs ??
        // A config broken since the VM started must not keep it from stopping.
        (await loadConfig(ctx.deps.layout.configFile).catch(() => defaultConfig())).timeouts.stopMs;
      const end = Date.now() + stopMs;
      // Ask the guest first: minimal images have no ACPI power-button handler, so the
      // VMM's powerdown (next, with what is left of the deadline and a kill after it) is the fallback.
      if ((await driver.status(handles)) === "running") {
        await ctx.shell
          .run(await ctx.targetOf(row, handles), GUEST_POWEROFF_COMMAND, {
            what: "the poweroff request",
            timeoutMs: Math.min(POWEROFF_SSH_MS, stopMs),
          })
          .catch(() => undefined);
      }
      await driver.stop(handles, Math.max(0, end - Date.now()));
    }
    // The console first, as before the split: a network step that throws (a helper call)
    // must not leave the recorder attached.
    driver.release?.(handles);
    // A VMM that outlived kill's own wait still has its sockets open: they stay with it.
    if ((await driver.status(handles).catch(() => "running" as const)) === "stopped")
      await driver.removeFiles(dir);
    for (const network of ctx.networks) await network.releaseVm(handles, dir);
  }
  await ctx.writeHandles(row, null);
  ctx.deps.store.updateVm(row.id, { state: "stopped", teardownJson: null });
}
