import type Database from "better-sqlite3";
import { insertUnique } from "./unique.js";

/** A saved VM state: what it was taken from and what a restore must match. */
export interface SnapshotRow {
  id: string;
  name: string;
  /** `user`: `vm snapshot`/`vm fork`; `boot`: the warm-boot snapshot of one VM shape. */
  kind: "user" | "boot";
  /** The VM it was taken from, by name (that VM may be gone since). */
  sourceVm: string | null;
  imageId: string;
  kernelRef: string;
  /** Changes when the kernel's files do (re-pulled or re-derived under the same name). */
  kernelFingerprint: string;
  vmm: "qemu" | "firecracker";
  /** The VMM's `describe()` when it was saved: a restore needs the same. */
  vmmVersion: string;
  accel: "kvm" | "tcg";
  vcpu: number;
  memoryBytes: number;
  diskBytes: number;
  /** Boot snapshots: the shape they serve (unique); null for user snapshots. */
  shapeKey: string | null;
  /** Bytes its files take on the host. */
  bytes: number;
  createdAt: string;
}

type SqlRow = Record<string, unknown>;

const fromSql = (r: SqlRow): SnapshotRow => ({
  id: r.id as string,
  name: r.name as string,
  kind: r.kind as SnapshotRow["kind"],
  sourceVm: r.source_vm as string | null,
  imageId: r.image_id as string,
  kernelRef: r.kernel_ref as string,
  kernelFingerprint: r.kernel_fingerprint as string,
  vmm: r.vmm as SnapshotRow["vmm"],
  vmmVersion: r.vmm_version as string,
  accel: r.accel as SnapshotRow["accel"],
  vcpu: r.vcpu as number,
  memoryBytes: r.memory_bytes as number,
  diskBytes: r.disk_bytes as number,
  shapeKey: r.shape_key as string | null,
  bytes: r.bytes as number,
  createdAt: r.created_at as string,
});

/** The `snapshots` table (migration 5). */
export class SnapshotTable {
  constructor(private readonly db: Database.Database) {}

  list(): SnapshotRow[] {
    return (this.db.prepare("SELECT * FROM snapshots ORDER BY name").all() as SqlRow[]).map(
      fromSql,
    );
  }

  byName(name: string): SnapshotRow | null {
    return this.one("SELECT * FROM snapshots WHERE name = ?", name);
  }

  byId(id: string): SnapshotRow | null {
    return this.one("SELECT * FROM snapshots WHERE id = ?", id);
  }

  byShapeKey(shapeKey: string): SnapshotRow | null {
    return this.one("SELECT * FROM snapshots WHERE shape_key = ?", shapeKey);
  }

  insert(s: SnapshotRow): void {
    insertUnique("snapshot", s.name, () =>
      this.db
        .prepare(
          `INSERT INTO snapshots (id, name, kind, source_vm, image_id, kernel_ref, kernel_fingerprint, vmm,
                                  vmm_version, accel, vcpu, memory_bytes, disk_bytes, shape_key, bytes, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          s.id,
          s.name,
          s.kind,
          s.sourceVm,
          s.imageId,
          s.kernelRef,
          s.kernelFingerprint,
          s.vmm,
          s.vmmVersion,
          s.accel,
          s.vcpu,
          s.memoryBytes,
          s.diskBytes,
          s.shapeKey,
          s.bytes,
          s.createdAt,
        ),
    );
  }

  /** Removes the row; a snapshot clones still sit on is refused by the foreign key. */
  delete(id: string): boolean {
    return this.db.prepare("DELETE FROM snapshots WHERE id = ?").run(id).changes > 0;
  }

  /**
   * Drops a row whose files are gone, in one transaction with its clones' link to it (their
   * disks sat on those files: they cannot start again either way). Returns those clones' names.
   */
  dropLost(id: string): string[] {
    return this.db.transaction(() => {
      const clones = (
        this.db
          .prepare("SELECT name FROM vms WHERE snapshot_id = ? ORDER BY name")
          .all(id) as Array<{
          name: string;
        }>
      ).map((r) => r.name);
      this.db.prepare("UPDATE vms SET snapshot_id = NULL WHERE snapshot_id = ?").run(id);
      this.db.prepare("DELETE FROM snapshots WHERE id = ?").run(id);
      return clones;
    })();
  }

  private one(sql: string, value: string): SnapshotRow | null {
    const row = this.db.prepare(sql).get(value) as SqlRow | undefined;
    return row ? fromSql(row) : null;
  }
}
