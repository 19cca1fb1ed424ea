import type { VmContext } from "./context.js";
import { releaseIfExited } from "./teardown.js";

/** How often the daemon looks for VMMs that exited without a signal it heard (one kill(0) and one /proc read per VM). */
export const EXIT_POLL_MS = 2_000;

export interface ExitWatch {
  /** Looks at every VM recorded as running now; resolves once those found gone are released. */
  check(): Promise<void>;
  /** No more checks; resolves once the one in flight is done. */
  stop(): Promise<void>;
}

/**
 * The daemon noticing exits: a VM recorded as running whose VMM has gone (a guest
 * `poweroff`, a crash, a kill from outside) is released and marked stopped, without any
 * request touching it. Drivers that can tell (QEMU: its console socket ended) trigger a
 * check at once; a poll catches the rest (Node has no pidfd to wait on).
 */
export function watchExits(ctx: VmContext, pollMs = EXIT_POLL_MS): ExitWatch {
  let stopped = false;
  let running: Promise<void> | null = null;
  let again = false;

  const checkOnce = async () => {
    for (const row of ctx.deps.store.listVms()) {
      if (stopped) return;
      if (!(await ctx.vmmGone(row))) continue;
      await releaseIfExited(ctx, row.id).catch((err: unknown) =>
        ctx.deps.log?.error({ err, vm: row.name }, "could not release a VM whose VMM exited"),
      );
    }
  };
  // One check at a time; a signal during one asks for another right after it.
  const check = (): Promise<void> => {
    if (stopped) return Promise.resolve();
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await checkOnce().catch((err: unknown) =>
          ctx.deps.log?.error({ err }, "the check for exited VMMs failed"),
        );
      } while (again && !stopped);
    })().finally(() => (running = null));
    return running;
  };

  const timer = setInterval(() => void check(), pollMs);
  // VMs outlive the daemon: the poll must not keep it running.
  timer.unref();
  const drivers = [ctx.deps.drivers.qemu, ctx.deps.drivers.firecracker];
  const unsubscribe = drivers.map((d) => d?.onExit?.(() => void check()));

  return {
    check,
    async stop() {
      stopped = true;
      clearInterval(timer);
      for (const off of unsubscribe) off?.();
      await running;
    },
  };
}
