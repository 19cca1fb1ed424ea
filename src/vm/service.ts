import type { VmInfo } from "../api/methods.js";
import type { GuestTarget, SshEndpoint } from "../guest/ssh.js";
import type { ListeningSocket } from "../guest/probe.js";
import type { Progress } from "../image/service.js";
import { VmContext, type VmServiceDeps } from "./context.js";
import { createVm, type CreateRequest } from "./create.js";
import { deleteVms, pruneVms } from "./delete.js";
import { listVms, logPath, showVm, vmHealth, vmPorts, vmStats } from "./inspect.js";
import { reconcileVms } from "./reconcile.js";
import { setVm } from "./set.js";
import { startVm } from "./start.js";
import { killVm, restartVm, stopVm } from "./stop.js";
import { exclusive, guestTarget, sshTarget } from "./target.js";
import { watchExits, type ExitWatch } from "./watch.js";

export type { VmServiceDeps } from "./context.js";
export type { CreateRequest } from "./create.js";

/** The VM verbs (one file each under src/vm/) over one shared VmContext, for handlers and services. */
export class VmService {
  /** Shared with the snapshot verbs (src/snapshot/), which save and clone VMs under the same locks. */
  readonly ctx: VmContext;

  constructor(deps: VmServiceDeps) {
    this.ctx = new VmContext(deps);
  }

  list = (): Promise<VmInfo[]> => listVms(this.ctx);
  show = (name: string): Promise<VmInfo> => showVm(this.ctx, name);
  create = (req: CreateRequest, progress?: Progress, signal?: AbortSignal) =>
    createVm(this.ctx, req, progress, signal);
  start = (name: string, progress?: Progress, signal?: AbortSignal): Promise<VmInfo> =>
    startVm(this.ctx, name, progress, signal);
  stop = (name: string): Promise<VmInfo> => stopVm(this.ctx, name);
  kill = (name: string): Promise<VmInfo> => killVm(this.ctx, name);
  restart = (name: string, progress?: Progress, signal?: AbortSignal): Promise<VmInfo> =>
    restartVm(this.ctx, name, progress, signal);
  delete = (names: string[]) => deleteVms(this.ctx, names);
  prune = () => pruneVms(this.ctx);
  set = (name: string, change: { vcpu?: number | undefined; memoryBytes?: number | undefined }) =>
    setVm(this.ctx, name, change);
  stats = (name: string) => vmStats(this.ctx, name);
  health = (name: string) => vmHealth(this.ctx, name);
  ports = (name: string): Promise<ListeningSocket[]> => vmPorts(this.ctx, name);
  logPath = (name: string): { path: string } => logPath(this.ctx, name);
  sshTarget = (name: string): Promise<SshEndpoint> => sshTarget(this.ctx, name);
  guestTarget = (name: string): Promise<GuestTarget> => guestTarget(this.ctx, name);
  exclusive = <T>(kind: string, vmId: string, fn: () => Promise<T>): Promise<T> =>
    exclusive(this.ctx, kind, vmId, fn);
  reconcile = (): Promise<void> => reconcileVms(this.ctx);
  /** Starts noticing VMMs that exit (the daemon runs it after reconcile); stop() ends it. */
  watchExits = (pollMs?: number): ExitWatch => watchExits(this.ctx, pollMs);
}
