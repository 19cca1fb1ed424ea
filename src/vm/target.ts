import type { GuestTarget, SshEndpoint } from "../guest/ssh.js";
import { notRunning, type VmContext } from "./context.js";

/** `vm ssh`: where the VM's sshd listens, with banger's key and known_hosts. */
export async function sshTarget(ctx: VmContext, name: string): Promise<SshEndpoint> {
  const handles = await ctx.liveHandles(ctx.row(name));
  if (!handles) throw notRunning(name);
  const identity = await ctx.sshIdentity();
  return {
    host: handles.sshHost,
    port: handles.sshPort,
    user: "root",
    identityFile: identity.privateKey,
    knownHostsFile: identity.knownHosts,
  };
}

/**
 * What guest-side work (workspace import, sessions) needs to reach a running VM
 * over SSH. Validated and snapshotted under the VM's lock, which is released on
 * return: the caller's guest I/O must not make stop/delete/restart wait.
 */
export function guestTarget(ctx: VmContext, name: string): Promise<GuestTarget> {
  return ctx.withVmLock(name, async (row) => {
    const live = await ctx.liveHandles(row);
    if (!live) throw notRunning(name);
    return ctx.targetOf(row, live);
  });
}

/**
 * Serialises one kind of guest-side work on one VM (two workspace imports never
 * interleave) on a lock of its own, separate from the lifecycle lock.
 */
export function exclusive<T>(
  ctx: VmContext,
  kind: string,
  vmId: string,
  fn: () => Promise<T>,
): Promise<T> {
  return ctx.locks.run(`${kind}:${vmId}`, fn);
}
