import fs from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { BangerError, ErrorCode } from "../api/errors.js";
import { ImageConfig } from "../api/methods/image.js";
import { migrations as allMigrations, type Migration } from "./migrations.js";
import { SnapshotTable } from "./snapshots.js";
import { insertUnique } from "./unique.js";

export type { SnapshotRow } from "./snapshots.js";

export interface KernelRow {
  name: string;
  version: string | null;
  source: string | null;
  dir: string;
  sha256: string | null;
  createdAt: string;
}

export interface ImageRow {
  id: string;
  name: string;
  kernelRef: string | null;
  rootfsPath: string;
  source: string | null;
  digest: string | null;
  sizeBytes: number | null;
  managed: boolean;
  createdAt: string;
  /** The init picked at finalisation (`banger.init=`); null for /sbin/init (registered files, older images). */
  init: string | null;
  /** The image's OCI config (Env, WorkingDir, ...); null for images without one. */
  config: ImageConfig | null;
}

/** A stored config that no longer parses is treated as none, never as a reason to fail a listing. */
function configFromSql(text: unknown): ImageConfig | null {
  if (typeof text !== "string") return null;
  try {
    const parsed = ImageConfig.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

export type VmState = "created" | "running" | "stopped" | "error";

export interface VmRow {
  id: string;
  name: string;
  imageId: string | null;
  kernelRef: string | null;
  vcpu: number;
  memoryBytes: number;
  diskBytes: number;
  state: VmState;
  nat: boolean;
  ip: string | null;
  mac: string | null;
  vmm: string | null;
  teardownJson: string | null;
  /** The snapshot this VM was cloned from: its disks are overlays over that snapshot's files. */
  snapshotId: string | null;
  createdAt: string;
  updatedAt: string;
}

type SqlRow = Record<string, unknown>;

const kernelFromSql = (r: SqlRow): KernelRow => ({
  name: r.name as string,
  version: r.version as string | null,
  source: r.source as string | null,
  dir: r.dir as string,
  sha256: r.sha256 as string | null,
  createdAt: r.created_at as string,
});

const imageFromSql = (r: SqlRow): ImageRow => ({
  id: r.id as string,
  name: r.name as string,
  kernelRef: r.kernel_ref as string | null,
  rootfsPath: r.rootfs_path as string,
  source: r.source as string | null,
  digest: r.digest as string | null,
  sizeBytes: r.size_bytes as number | null,
  managed: r.managed === 1,
  createdAt: r.created_at as string,
  init: (r.init as string | null | undefined) ?? null,
  config: configFromSql(r.config_json),
});

const vmFromSql = (r: SqlRow): VmRow => ({
  id: r.id as string,
  name: r.name as string,
  imageId: r.image_id as string | null,
  kernelRef: r.kernel_ref as string | null,
  vcpu: r.vcpu as number,
  memoryBytes: r.memory_bytes as number,
  diskBytes: r.disk_bytes as number,
  state: r.state as VmState,
  nat: r.nat === 1,
  ip: r.ip as string | null,
  mac: r.mac as string | null,
  vmm: r.vmm as string | null,
  teardownJson: r.teardown_json as string | null,
  snapshotId: (r.snapshot_id as string | null | undefined) ?? null,
  createdAt: r.created_at as string,
  updatedAt: r.updated_at as string,
});

const VM_COLUMNS: Record<keyof Omit<VmRow, "id" | "createdAt">, string> = {
  name: "name",
  imageId: "image_id",
  kernelRef: "kernel_ref",
  vcpu: "vcpu",
  memoryBytes: "memory_bytes",
  diskBytes: "disk_bytes",
  state: "state",
  nat: "nat",
  ip: "ip",
  mac: "mac",
  vmm: "vmm",
  teardownJson: "teardown_json",
  snapshotId: "snapshot_id",
  updatedAt: "updated_at",
};

function sqlValue(v: unknown): unknown {
  return typeof v === "boolean" ? (v ? 1 : 0) : v;
}

/** SQLite access for the daemon: durable intent (VMs, images, kernels). */
export class Store {
  private closed = false;
  /** Saved VM states (src/snapshot/). */
  readonly snapshots: SnapshotTable;

  private constructor(private readonly db: Database.Database) {
    this.snapshots = new SnapshotTable(db);
  }

  /** Open (creating) the database and bring its schema up to date. */
  static open(file: string, deps: { migrations?: Migration[] } = {}): Store {
    const list = deps.migrations ?? allMigrations;
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const db = new Database(file);
    try {
      db.pragma("journal_mode = WAL");
      db.pragma("foreign_keys = ON");
      db.pragma("busy_timeout = 5000");
      migrate(db, list, file);
    } catch (err) {
      db.close();
      throw err;
    }
    return new Store(db);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.db.close();
  }

  schemaVersion(): number {
    return currentVersion(this.db);
  }

  journalMode(): string {
    return String(this.db.pragma("journal_mode", { simple: true }));
  }

  listKernels(): KernelRow[] {
    return (this.db.prepare("SELECT * FROM kernels ORDER BY name").all() as SqlRow[]).map(
      kernelFromSql,
    );
  }

  getKernel(name: string): KernelRow | null {
    const row = this.db.prepare("SELECT * FROM kernels WHERE name = ?").get(name) as
      SqlRow | undefined;
    return row ? kernelFromSql(row) : null;
  }

  insertKernel(k: KernelRow): void {
    insertUnique("kernel", k.name, () =>
      this.db
        .prepare(
          "INSERT INTO kernels (name, version, source, dir, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .run(k.name, k.version, k.source, k.dir, k.sha256, k.createdAt),
    );
  }

  deleteKernel(name: string): boolean {
    return this.db.prepare("DELETE FROM kernels WHERE name = ?").run(name).changes > 0;
  }

  listImages(): ImageRow[] {
    return (this.db.prepare("SELECT * FROM images ORDER BY name").all() as SqlRow[]).map(
      imageFromSql,
    );
  }

  getImage(id: string): ImageRow | null {
    const row = this.db.prepare("SELECT * FROM images WHERE id = ?").get(id) as SqlRow | undefined;
    return row ? imageFromSql(row) : null;
  }

  getImageByName(name: string): ImageRow | null {
    const row = this.db.prepare("SELECT * FROM images WHERE name = ?").get(name) as
      SqlRow | undefined;
    return row ? imageFromSql(row) : null;
  }

  insertImage(i: ImageRow): void {
    insertUnique("image", i.name, () =>
      this.db
        .prepare(
          `INSERT INTO images (id, name, kernel_ref, rootfs_path, source, digest, size_bytes, managed, created_at, init, config_json)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          i.id,
          i.name,
          i.kernelRef,
          i.rootfsPath,
          i.source,
          i.digest,
          i.sizeBytes,
          i.managed ? 1 : 0,
          i.createdAt,
          i.init,
          i.config === null ? null : JSON.stringify(i.config),
        ),
    );
  }

  /** Marks an image managed at a new rootfs path (image promote). */
  updateImageRootfs(id: string, rootfsPath: string, managed: boolean): void {
    this.db
      .prepare("UPDATE images SET rootfs_path = ?, managed = ? WHERE id = ?")
      .run(rootfsPath, managed ? 1 : 0, id);
  }

  deleteImage(id: string): boolean {
    return this.db.prepare("DELETE FROM images WHERE id = ?").run(id).changes > 0;
  }

  listVms(): VmRow[] {
    return (this.db.prepare("SELECT * FROM vms ORDER BY name").all() as SqlRow[]).map(vmFromSql);
  }

  getVmByName(name: string): VmRow | null {
    const row = this.db.prepare("SELECT * FROM vms WHERE name = ?").get(name) as SqlRow | undefined;
    return row ? vmFromSql(row) : null;
  }

  insertVm(v: VmRow): void {
    insertUnique("VM", v.name, () =>
      this.db
        .prepare(
          `INSERT INTO vms (id, name, image_id, kernel_ref, vcpu, memory_bytes, disk_bytes, state, nat, ip, mac, vmm,
                            teardown_json, snapshot_id, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          v.id,
          v.name,
          v.imageId,
          v.kernelRef,
          v.vcpu,
          v.memoryBytes,
          v.diskBytes,
          v.state,
          v.nat ? 1 : 0,
          v.ip,
          v.mac,
          v.vmm,
          v.teardownJson,
          v.snapshotId,
          v.createdAt,
          v.updatedAt,
        ),
    );
  }

  /** Update some columns; `updatedAt` is set for the caller. */
  updateVm(id: string, patch: Partial<Omit<VmRow, "id" | "createdAt" | "updatedAt">>): void {
    const entries = Object.entries({ ...patch, updatedAt: new Date().toISOString() }) as Array<
      [keyof typeof VM_COLUMNS, unknown]
    >;
    const sets = entries.map(([k]) => `${VM_COLUMNS[k]} = ?`).join(", ");
    this.db
      .prepare(`UPDATE vms SET ${sets} WHERE id = ?`)
      .run(...entries.map(([, v]) => sqlValue(v)), id);
  }

  deleteVm(id: string): boolean {
    return this.db.prepare("DELETE FROM vms WHERE id = ?").run(id).changes > 0;
  }
}

function currentVersion(db: Database.Database): number {
  const row = db.prepare("SELECT MAX(version) AS v FROM schema_migrations").get() as {
    v: number | null;
  };
  return row.v ?? 0;
}

function migrate(db: Database.Database, list: Migration[], file: string): void {
  db.exec(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)",
  );
  const known = list.at(-1)?.version ?? 0;
  const have = currentVersion(db);
  if (have > known) {
    throw new BangerError(
      ErrorCode.Precondition,
      `${file} has schema version ${have}, newer than this banger understands (${known})`,
      "a newer banger wrote it: upgrade banger, or move the state directory aside to start fresh",
    );
  }
  const record = db.prepare(
    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
  );
  for (const m of list) {
    if (m.version <= have) continue;
    db.transaction(() => {
      db.exec(m.up);
      record.run(m.version, m.name, new Date().toISOString());
    })();
  }
}
