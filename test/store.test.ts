import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import Database from "better-sqlite3";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { migrations } from "../src/store/migrations.js";
import { Store, type ImageRow, type SnapshotRow, type VmRow } from "../src/store/store.js";

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});

async function dbFile(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-store-"));
  dirs.push(dir);
  return path.join(dir, "state", "banger.db");
}

const now = "2026-01-01T00:00:00.000Z";
const image: ImageRow = {
  id: "img1",
  name: "debian-bookworm",
  kernelRef: "debian-cloud",
  rootfsPath: "/x/rootfs.ext4",
  source: "mmdebstrap",
  digest: null,
  sizeBytes: 1024,
  managed: true,
  createdAt: now,
  init: "/usr/lib/banger/init",
  config: null,
};
const vm: VmRow = {
  id: "vm1",
  name: "dev",
  imageId: "img1",
  kernelRef: null,
  vcpu: 2,
  memoryBytes: 2 << 30,
  diskBytes: 8 << 30,
  state: "created",
  nat: false,
  ip: null,
  mac: null,
  vmm: "qemu",
  teardownJson: null,
  snapshotId: null,
  createdAt: now,
  updatedAt: now,
};

test("a fresh database migrates to the latest version in WAL mode", async () => {
  const store = Store.open(await dbFile());
  assert.equal(store.schemaVersion(), migrations.at(-1)!.version);
  assert.equal(store.journalMode(), "wal");
  assert.deepEqual(store.listVms(), []);
  store.close();
  store.close(); // idempotent
});

test("migration versions are strictly increasing from 1", () => {
  migrations.forEach((m, i) => assert.equal(m.version, i + 1));
});

// Representative data for the tables that exist at each version.
const seeds: Record<number, (db: Database.Database) => void> = {
  1: (db) => {
    db.prepare("INSERT INTO kernels (name, dir, created_at) VALUES ('k', '/k', ?)").run(now);
    db.prepare(
      "INSERT INTO images (id, name, kernel_ref, rootfs_path, managed, created_at) VALUES ('img1', 'debian-bookworm', 'k', '/r', 1, ?)",
    ).run(now);
  },
  2: (db) => {
    db.prepare(
      "INSERT INTO vms (id, name, image_id, vcpu, memory_bytes, disk_bytes, created_at, updated_at) VALUES ('vm1', 'dev', 'img1', 1, 1, 1, ?, ?)",
    ).run(now, now);
  },
  5: (db) => {
    db.prepare(
      `INSERT INTO snapshots (id, name, kind, image_id, kernel_ref, kernel_fingerprint, vmm, vmm_version, accel,
                              vcpu, memory_bytes, disk_bytes, bytes, created_at)
       VALUES ('s1', 'base', 'user', 'img1', 'k', 'f', 'qemu', 'QEMU 7.2', 'tcg', 1, 1, 1, 1, ?)`,
    ).run(now);
  },
};

for (let k = 1; k <= migrations.length; k++) {
  test(`a database created at version ${k} upgrades to the latest and keeps its data`, async () => {
    const file = await dbFile();
    // Build the old database the way that old banger would have: migrations 1..k only.
    const old = Store.open(file, { migrations: migrations.slice(0, k) });
    old.close();
    const raw = new Database(file);
    for (let v = 1; v <= k; v++) seeds[v]?.(raw);
    raw.close();

    const store = Store.open(file);
    assert.equal(store.schemaVersion(), migrations.at(-1)!.version);
    assert.equal(store.getKernel("k")?.dir, "/k");
    assert.equal(store.getImageByName("debian-bookworm")?.id, "img1");
    if (k >= 2) assert.equal(store.getVmByName("dev")?.imageId, "img1");
    if (k >= 2) assert.equal(store.getVmByName("dev")?.snapshotId, null, "older VMs are no clones");
    if (k >= 5) assert.equal(store.snapshots.byName("base")?.id, "s1");
    store.close();
  });
}

test("a database from a newer banger is refused with a clear message", async () => {
  const file = await dbFile();
  Store.open(file).close();
  const raw = new Database(file);
  raw
    .prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (99, 'future', ?)")
    .run(now);
  raw.close();
  assert.throws(
    () => Store.open(file),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.Precondition &&
      /schema version 99, newer than this banger understands/.test(err.message),
  );
});

test("CRUD round trips and unique names", async () => {
  const store = Store.open(await dbFile());
  store.insertKernel({
    name: "debian-cloud",
    version: "6.1",
    source: "apt",
    dir: "/k",
    sha256: null,
    createdAt: now,
  });
  store.insertImage(image);
  store.insertVm(vm);
  assert.deepEqual(store.getImageByName("debian-bookworm"), image);
  const config = {
    entrypoint: null,
    cmd: ["python3"],
    env: ["PATH=/usr/local/bin:/usr/bin", "A=b c"],
    workingDir: "/app",
    exposedPorts: ["80/tcp"],
    user: null,
    warnings: ["Env X dropped"],
  };
  store.insertImage({ ...image, id: "img2", name: "py", config });
  assert.deepEqual(store.getImageByName("py")?.config, config, "the OCI config round-trips");
  store.deleteImage("img2");
  assert.deepEqual(store.getVmByName("dev"), vm);
  assert.throws(
    () => store.insertVm({ ...vm, id: "vm2" }),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.AlreadyExists &&
      /VM named "dev"/.test(err.message),
  );
  store.updateVm("vm1", { state: "running", ip: "172.30.0.2", nat: true });
  const updated = store.getVmByName("dev")!;
  assert.equal(updated.state, "running");
  assert.equal(updated.nat, true);
  assert.notEqual(updated.updatedAt, now);
  assert.equal(store.deleteVm("vm1"), true);
  assert.equal(store.deleteImage("img1"), true);
  assert.equal(store.deleteKernel("debian-cloud"), true);
  assert.equal(store.deleteKernel("debian-cloud"), false);
  store.close();
});

const snapshot: SnapshotRow = {
  id: "snap1",
  name: "base",
  kind: "user",
  sourceVm: "dev",
  imageId: "img1",
  kernelRef: "debian-cloud",
  kernelFingerprint: "abc@2026",
  vmm: "qemu",
  vmmVersion: "QEMU 7.2.0",
  accel: "tcg",
  vcpu: 2,
  memoryBytes: 2 << 30,
  diskBytes: 8 << 30,
  shapeKey: null,
  bytes: 150 << 20,
  createdAt: now,
};

test("snapshots: round trip, unique names and shape keys, clones hold them, a lost one is dropped", async () => {
  const store = Store.open(await dbFile());
  store.insertImage(image);
  store.snapshots.insert(snapshot);
  assert.deepEqual(store.snapshots.byName("base"), snapshot);
  assert.deepEqual(store.snapshots.byId("snap1"), snapshot);
  assert.equal(store.snapshots.byName("nope"), null);
  assert.throws(
    () => store.snapshots.insert({ ...snapshot, id: "snap2" }),
    (err: unknown) =>
      err instanceof BangerError &&
      err.code === ErrorCode.AlreadyExists &&
      /snapshot named "base"/.test(err.message),
  );
  const boot = { ...snapshot, id: "boot1", name: "boot-x", kind: "boot" as const, shapeKey: "k1" };
  store.snapshots.insert(boot);
  assert.deepEqual(store.snapshots.byShapeKey("k1"), boot);
  assert.throws(
    () => store.snapshots.insert({ ...boot, id: "boot2", name: "boot-y" }),
    /already exists/,
    "one boot snapshot per shape",
  );
  assert.deepEqual(
    store.snapshots.list().map((s) => s.name),
    ["base", "boot-x"],
  );
  store.insertVm({ ...vm, snapshotId: "snap1" });
  store.insertVm({ ...vm, id: "vm2", name: "other", snapshotId: "snap1" });
  assert.equal(store.getVmByName("dev")?.snapshotId, "snap1");
  assert.throws(() => store.snapshots.delete("snap1"), /FOREIGN KEY/, "clones hold their snapshot");
  assert.deepEqual(store.snapshots.dropLost("snap1"), ["dev", "other"]);
  assert.equal(store.snapshots.byId("snap1"), null);
  assert.equal(store.getVmByName("dev")?.snapshotId, null);
  assert.equal(store.snapshots.delete("boot1"), true);
  assert.equal(store.snapshots.delete("boot1"), false);
  assert.throws(
    () => store.snapshots.insert({ ...snapshot, imageId: "gone" }),
    /FOREIGN KEY/,
    "a snapshot names an image that exists",
  );
  store.close();
});
