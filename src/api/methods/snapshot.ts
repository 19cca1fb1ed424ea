import { z } from "zod";
import { Empty, NameParam, type MethodSpec } from "./common.js";
import { VmInfo } from "./vm.js";

export const SnapshotInfo = z.object({
  id: z.string(),
  name: z.string(),
  /** `user`: taken by `vm snapshot`/`vm fork`; `boot`: the warm-boot snapshot of one VM shape. */
  kind: z.enum(["user", "boot"]),
  /** The VM it was taken from (it may be gone since). */
  sourceVm: z.string().nullable(),
  /** The image's name; null once no image row has its id (a restore is then refused). */
  image: z.string().nullable(),
  kernel: z.string(),
  vmm: z.string(),
  vmmVersion: z.string(),
  accel: z.enum(["kvm", "tcg"]),
  vcpu: z.number().int(),
  memoryBytes: z.number().int(),
  diskBytes: z.number().int(),
  /** Bytes its files take on the host (memory and both disks). */
  bytes: z.number().int(),
  createdAt: z.string(),
  /** The VMs whose disks sit on it: while there are any it cannot be deleted. */
  clones: z.array(z.string()),
});

/** Saved VM states and the verbs that make and use them (src/snapshot/). */
export const snapshotMethods = {
  "snapshot.list": {
    params: Empty,
    result: z.array(SnapshotInfo),
    summary: "All snapshots with their sizes and clones.",
  },
  "snapshot.show": { params: NameParam, result: SnapshotInfo, summary: "One snapshot by name." },
  "snapshot.delete": {
    params: NameParam,
    result: z.object({ deleted: z.string(), freedBytes: z.number().int() }),
    summary: "Remove a snapshot and its files; refused while VMs are cloned from it.",
  },
  "snapshot.prune": {
    params: z.object({ dryRun: z.boolean().optional() }).strict(),
    result: z.object({
      deleted: z.array(z.string()),
      freedBytes: z.number().int(),
      dryRun: z.boolean(),
    }),
    summary:
      "Remove warm start's boot snapshots no VM is cloned from (the next create of each shape boots cold and saves one again).",
  },
  "vm.snapshot": {
    params: z
      .object({
        /** The VM. */
        name: z.string().min(1),
        /** The snapshot's name (default: `<vm>-snap-<n>`). */
        snapshot: z.string().min(1).optional(),
        /** Leave the VM stopped afterwards instead of running it on. */
        stop: z.boolean().optional(),
      })
      .strict(),
    result: SnapshotInfo.extend({ pausedMs: z.number().int() }),
    summary: "Save a running VM's memory and disks as a snapshot, then resume it (or stop it).",
    progress: true,
  },
  "vm.fork": {
    params: z
      .object({
        /** The VM to fork. */
        name: z.string().min(1),
        /** The new VM's name (default: `<vm>-fork-<n>`). */
        clone: z.string().min(1).optional(),
        nat: z.boolean().optional(),
      })
      .strict(),
    result: VmInfo.extend({
      snapshot: z.string(),
      /** A restore that fell back to a cold boot says so here. */
      warnings: z.array(z.string()),
      /** True when the clone was restored (not booted cold after a failed restore). */
      restored: z.boolean(),
    }),
    summary:
      "Snapshot a running VM and start a clone of it (`restored`; `warnings` says when it booted cold instead).",
    progress: true,
  },
} as const satisfies Record<string, MethodSpec>;

export type SnapshotInfo = z.infer<typeof SnapshotInfo>;
