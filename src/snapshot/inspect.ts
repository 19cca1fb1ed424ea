import type { SnapshotInfo } from "../api/methods.js";
import type { SnapshotContext } from "./context.js";

export function listSnapshots(ctx: SnapshotContext): SnapshotInfo[] {
  return ctx.store.snapshots.list().map((s) => ctx.info(s));
}

export function showSnapshot(ctx: SnapshotContext, name: string): SnapshotInfo {
  return ctx.info(ctx.row(name));
}
