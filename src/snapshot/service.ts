import type { SnapshotInfo, VmInfo } from "../api/methods.js";
import type { Progress } from "../image/service.js";
import { cloneSnapshot, type CloneRequest } from "./clone.js";
import { SnapshotContext, type SnapshotServiceDeps } from "./context.js";
import { deleteSnapshot, pruneBootSnapshots } from "./delete.js";
import { forkVm, type ForkRequest } from "./fork.js";
import { listSnapshots, showSnapshot } from "./inspect.js";
import { takeSnapshot, type TakeRequest } from "./take.js";
import { warmCreate, type WarmCreateRequest, type WarmCreateResult } from "./warm.js";

export type { SnapshotServiceDeps } from "./context.js";

/** The snapshot verbs (one file each under src/snapshot/) over one SnapshotContext. */
export class SnapshotService {
  private readonly ctx: SnapshotContext;

  constructor(deps: SnapshotServiceDeps) {
    this.ctx = new SnapshotContext(deps);
  }

  list = (): SnapshotInfo[] => listSnapshots(this.ctx);
  show = (name: string): SnapshotInfo => showSnapshot(this.ctx, name);
  delete = (name: string) => deleteSnapshot(this.ctx, name);
  prune = (dryRun: boolean) => pruneBootSnapshots(this.ctx, dryRun);
  take = (vm: string, req: TakeRequest, progress?: Progress) =>
    takeSnapshot(this.ctx, vm, req, progress);
  clone = (
    req: CloneRequest,
    progress?: Progress,
    signal?: AbortSignal,
  ): Promise<VmInfo & { warnings: string[] }> => cloneSnapshot(this.ctx, req, progress, signal);
  /** `vm create` with warm start: restores the shape's boot snapshot when there is one. */
  create = (
    req: WarmCreateRequest,
    progress?: Progress,
    signal?: AbortSignal,
  ): Promise<WarmCreateResult> => warmCreate(this.ctx, req, progress, signal);
  fork = (vm: string, req: ForkRequest, progress?: Progress, signal?: AbortSignal) =>
    forkVm(this.ctx, vm, req, progress, signal);
}
