import path from "node:path";
import type { VmInfo } from "../api/methods.js";
import { listeningSockets, sshHealth, type ListeningSocket } from "../guest/probe.js";
import { allocatedBytes } from "../vmm/root-disk.js";
import { CONSOLE_LOG_FILE } from "../vmm/console-log.js";
import { processUsage } from "../vmm/process.js";
import { notRunning, WORK_DISK, type VmContext } from "./context.js";

export function listVms(ctx: VmContext): VmInfo[] {
  return ctx.deps.store.listVms().map((r) => ctx.info(r));
}

export function showVm(ctx: VmContext, name: string): VmInfo {
  return ctx.info(ctx.row(name));
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
    workDiskBytes: await allocatedBytes(path.join(dir, WORK_DISK)),
  };
}

export async function vmHealth(
  ctx: VmContext,
  name: string,
): Promise<{ name: string; vmm: boolean; ssh: boolean; detail: string }> {
  const row = ctx.row(name);
  const live = await ctx.liveHandles(row);
  if (!live)
    return {
      name,
      vmm: false,
      ssh: false,
      detail: row.state === "running" ? "the VMM process is gone" : `the VM is ${row.state}`,
    };
  return { name, vmm: true, ...(await sshHealth(ctx.shell, await ctx.targetOf(row, live))) };
}

/** Listening sockets in the guest, from `ss` over SSH. */
export async function vmPorts(ctx: VmContext, name: string): Promise<ListeningSocket[]> {
  const row = ctx.row(name);
  const handles = await ctx.runningHandles(row);
  if (!handles) throw notRunning(name);
  return listeningSockets(ctx.shell, await ctx.targetOf(row, handles));
}
