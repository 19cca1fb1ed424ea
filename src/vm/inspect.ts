import path from "node:path";
import type { VmInfo } from "../api/methods.js";
import { listeningSockets, sshHealth, type ListeningSocket } from "../guest/probe.js";
import { allocatedBytes } from "../vmm/root-disk.js";
import { CONSOLE_LOG_FILE } from "../vmm/console-log.js";
import { processUsage } from "../vmm/process.js";
import type { VmRow } from "../store/store.js";
import { notRunning, type VmContext } from "./context.js";
import { workDiskOf } from "./restore.js";
import { releaseIfExited } from "./teardown.js";

/**
 * How long list/show wait for the release of a VM found dead before answering anyway: a
 * stop or start holding the VM's lock may take its time (and sees to its VMM itself).
 */
const RELEASE_WAIT_MS = 2_000;

/**
 * The row as it is, except that a VM recorded as running whose VMM has exited is never shown
 * running: it is released (bounded wait) and shown stopped. Null when it was deleted meanwhile.
 */
async function honestInfo(ctx: VmContext, row: VmRow): Promise<VmInfo | null> {
  if (!(await ctx.vmmGone(row))) return ctx.info(row);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    releaseIfExited(ctx, row.id).catch(() => false),
    new Promise((r) => (timer = setTimeout(r, RELEASE_WAIT_MS))),
  ]).finally(() => clearTimeout(timer));
  const now = ctx.deps.store.listVms().find((v) => v.id === row.id);
  if (!now) return null;
  return ctx.info((await ctx.vmmGone(now)) ? { ...now, state: "stopped" } : now);
}

export async function listVms(ctx: VmContext): Promise<VmInfo[]> {
  const infos = await Promise.all(ctx.deps.store.listVms().map((r) => honestInfo(ctx, r)));
  return infos.filter((i): i is VmInfo => i !== null);
}

export async function showVm(ctx: VmContext, name: string): Promise<VmInfo> {
  return (await honestInfo(ctx, ctx.row(name))) ?? ctx.info(ctx.row(name));
}

export function logPath(ctx: VmContext, name: string): { path: string } {
  return { path: path.join(ctx.dirOf(ctx.row(name).id), CONSOLE_LOG_FILE) };
}

/** Configured size, the VMM's RSS and CPU time (from /proc), and what the disks really use. */
export async function vmStats(
  ctx: VmContext,
  name: string,
): Promise<{
  name: string;
  vcpu: number;
  memoryBytes: number;
  rssBytes: number | null;
  cpuSeconds: number | null;
  overlayBytes: number;
  workDiskBytes: number;
}> {
  const row = ctx.row(name);
  const live = await ctx.liveHandles(row);
  const usage = live ? await processUsage(live.pid) : { rssBytes: null, cpuSeconds: null };
  const dir = ctx.dirOf(row.id);
  return {
    name,
    vcpu: row.vcpu,
    memoryBytes: row.memoryBytes,
    ...usage,
    overlayBytes: await ctx.driverFor(row.vmm).rootDisk.usedBytes(dir),
    workDiskBytes: await allocatedBytes((await workDiskOf(dir)).file),
  };
}

export async function vmHealth(
  ctx: VmContext,
  name: string,
): Promise<{ name: string; vmm: boolean; ssh: boolean; detail: string }> {
  const row = ctx.row(name);
  const live = await ctx.liveHandles(row);
  if (!live) {
    // Recorded as running, VMM gone: released now, not at the next poll.
    if (row.state === "running") await releaseIfExited(ctx, row.id).catch(() => false);
    return {
      name,
      vmm: false,
      ssh: false,
      detail: row.state === "running" ? "the VMM process is gone" : `the VM is ${row.state}`,
    };
  }
  return { name, vmm: true, ...(await sshHealth(ctx.shell, await ctx.targetOf(row, live))) };
}

/** Listening sockets in the guest, from `ss` over SSH. */
export async function vmPorts(ctx: VmContext, name: string): Promise<ListeningSocket[]> {
  const row = ctx.row(name);
  const handles = await ctx.liveHandles(row);
  if (!handles) throw notRunning(name);
  return listeningSockets(ctx.shell, await ctx.targetOf(row, handles));
}
