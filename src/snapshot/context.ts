import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { SnapshotInfo } from "../api/methods.js";
import { VM_NAME } from "../api/vm-names.js";
import { loadConfig } from "../config/config.js";
import type { GuestTarget } from "../guest/ssh.js";
import type { KernelRow, SnapshotRow, Store, VmRow } from "../store/store.js";
import { detectAccel, realAccelDeps, resolveAccel } from "../system/accel.js";
import type { VmContext } from "../vm/context.js";
import type { VmHandles } from "../vmm/driver.js";

export interface SnapshotServiceDeps {
  /** The VM verbs' context: its store, locks, handles, drivers and network. */
  vms: VmContext;
  /**
   * Runs before every save, with the VM running: starts the guest's identity reader
   * (src/guest/identity.ts startIdentityReader), so every clone has one waiting in its memory.
   */
  prepareGuest(target: GuestTarget): Promise<void>;
  /**
   * Runs once a saved VM runs on (not after --stop): tells its waiting identity reader who it
   * is (itself, with the host's clock now), so the reader exits and the guest's clock is right.
   */
  resumedGuest(vm: VmRow, handles: VmHandles): Promise<void>;
  /** Bounds one save (pause, memory, disks); default 5 minutes. */
  saveDeadlineMs?: number;
}

const DEFAULT_SAVE_DEADLINE_MS = 300_000;

/** What every snapshot verb shares: the VM context, where snapshots live, their names and rows. */
export class SnapshotContext {
  constructor(readonly deps: SnapshotServiceDeps) {}

  get store(): Store {
    return this.deps.vms.deps.store;
  }

  get saveDeadlineMs(): number {
    return this.deps.saveDeadlineMs ?? DEFAULT_SAVE_DEADLINE_MS;
  }

  /** A finished snapshot's directory. */
  dirOf(id: string): string {
    return path.join(this.deps.vms.deps.layout.snapshotsDir, id);
  }

  /** Where a save writes before its directory is renamed into place (the start-up sweep removes it). */
  stagingOf(id: string): string {
    return path.join(this.deps.vms.deps.layout.snapshotsDir, `${STAGING_PREFIX}${id}`);
  }

  row(name: string): SnapshotRow {
    const row = this.store.snapshots.byName(name);
    if (!row)
      throw new BangerError(
        ErrorCode.NotFound,
        `no snapshot named ${JSON.stringify(name)}`,
        "'banger snapshot list' shows what exists",
      );
    return row;
  }

  info(row: SnapshotRow): SnapshotInfo {
    return {
      id: row.id,
      name: row.name,
      kind: row.kind,
      sourceVm: row.sourceVm,
      image: this.store.getImage(row.imageId)?.name ?? null,
      kernel: row.kernelRef,
      vmm: row.vmm,
      vmmVersion: row.vmmVersion,
      accel: row.accel,
      vcpu: row.vcpu,
      memoryBytes: row.memoryBytes,
      diskBytes: row.diskBytes,
      bytes: row.bytes,
      createdAt: row.createdAt,
      clones: this.clonesOf(row.id),
    };
  }

  /** Names of the VMs whose disks sit on this snapshot. */
  clonesOf(id: string): string[] {
    return this.store
      .listVms()
      .filter((v) => v.snapshotId === id)
      .map((v) => v.name);
  }

  /** The accelerator VMs start under now (as start.ts resolves it). */
  async hostAccel(): Promise<"kvm" | "tcg"> {
    const vms = this.deps.vms.deps;
    const config = await loadConfig(vms.layout.configFile);
    return resolveAccel(config.accel, await detectAccel(vms.accel ?? realAccelDeps()));
  }
}

/** Snapshot work in progress under snapshots/: `.staging-<id>`. */
export const STAGING_PREFIX = ".staging-";

/** Changes whenever the kernel's files do: a re-pull or re-derive writes a new row and manifest. */
export function kernelFingerprint(kernel: KernelRow): string {
  return `${kernel.sha256 ?? "-"}@${kernel.createdAt}`;
}

/** A snapshot or VM name given by the user: the VM-name rules (a DNS label). */
export function checkName(kind: "snapshot" | "VM", name: string): void {
  if (!VM_NAME.test(name))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid ${kind} name ${JSON.stringify(name)}`,
      "a DNS label: lower-case letters, digits and '-', at most 63, not starting or ending with '-'",
    );
}

/**
 * The first of `<base>-<suffix>-1`, `-2`, ... that `taken` says is free, the base shortened so
 * the name stays a DNS label.
 */
export function freeName(base: string, suffix: string, taken: (name: string) => boolean): string {
  for (let n = 1; n <= MAX_GENERATED; n++) {
    const tail = `-${suffix}-${n}`;
    const head = base.slice(0, 63 - tail.length).replace(/-+$/, "");
    const name = `${head}${tail}`;
    if (!taken(name)) return name;
  }
  throw new BangerError(
    ErrorCode.AlreadyExists,
    `every name from ${base}-${suffix}-1 to -${MAX_GENERATED} is taken`,
    "pass --name",
  );
}

const MAX_GENERATED = 1000;
