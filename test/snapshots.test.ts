// The snapshot verbs over a fake driver that writes the snapshot's files itself: what the store,
// the directories and the VM look like after a save, a failed save, a clone, a refused clone,
// a delete and a start-up sweep. The real save and restore are test/e2e/snapshots.test.ts's.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { methods } from "../src/api/methods.js";
import { sweepOrphans } from "../src/daemon/sweep.js";
import { SnapshotService } from "../src/snapshot/service.js";
import type { ImageRow, KernelRow, SnapshotRow, Store } from "../src/store/store.js";
import { createCommandRunner } from "../src/system/runner.js";
import { readRestoreMarker } from "../src/vm/restore.js";
import { VmService } from "../src/vm/service.js";
import { SNAPSHOT_FILES, type Driver, type SaveRequest } from "../src/vmm/driver.js";
import { fakeDriver, fakeHandles } from "./helpers/fake-driver.js";
import { imageServices, testVmService } from "./helpers/services.js";
import { withTempStore, type TempLayout } from "./helpers/temp-home.js";
import { vmRow } from "./helpers/vm-row.js";

const now = "2026-01-01T00:00:00.000Z";
const kernel: KernelRow = {
  name: "debian-cloud",
  version: "6.1",
  source: "apt",
  dir: "/nonexistent/kernel",
  sha256: "aa",
  createdAt: now,
};

interface Rig {
  home: TempLayout;
  store: Store;
  vms: VmService;
  snapshots: SnapshotService;
  driver: ReturnType<typeof fakeDriver> & Driver;
  /** What happened, in order: prepare (the identity reader), save, clone. */
  events: string[];
  saves: SaveRequest[];
  /** Set to make the next save fail after writing part of the memory file. */
  failSave: { value: boolean };
  version: { value: string };
}

/** A store with one image, one kernel and a running VM `dev` whose fake VMM can snapshot. */
async function withRig(fn: (rig: Rig) => Promise<void>): Promise<void> {
  await withTempStore(async (home, store) => {
    const runner = createCommandRunner();
    const events: string[] = [];
    const saves: SaveRequest[] = [];
    const failSave = { value: false };
    const version = { value: "fake 1.0" };
    const base = fakeDriver(runner);
    const driver = Object.assign(base, {
      features: { ...base.features, snapshot: true },
      describe: async () => version.value,
      snapshots: {
        save: async (_h: unknown, req: SaveRequest) => {
          events.push("save");
          saves.push(req);
          // While the save writes, its final directory does not exist: only the staging one.
          const id = path.basename(req.dir).replace(/^\.staging-/, "");
          await assert.rejects(fs.lstat(path.join(home.layout.snapshotsDir, id)), /ENOENT/);
          await fs.writeFile(path.join(req.dir, SNAPSHOT_FILES.memory), "mem");
          if (failSave.value) throw new BangerError(ErrorCode.Internal, "the disk is full");
          await fs.writeFile(path.join(req.dir, SNAPSHOT_FILES.rootDisk), "root");
          await fs.writeFile(path.join(req.dir, SNAPSHOT_FILES.workDisk), "work");
          if (!req.resume) base.alive = false;
          return { vmmVersion: version.value, bytes: 12_288, pausedMs: 7 };
        },
        cloneDisks: async (snapshotDir: string, vmDir: string) => {
          events.push(`clone ${path.basename(snapshotDir)}`);
          await fs.writeFile(path.join(vmDir, "root.qcow2"), snapshotDir);
          await fs.writeFile(path.join(vmDir, "work.qcow2"), snapshotDir);
          return "qcow2" as const;
        },
      },
    });
    const vms = testVmService(store, home.layout, driver, runner, {
      accel: { readFile: async () => "", canOpenRw: async () => false },
      stopDeadlineMs: 500,
    });
    const snapshots = new SnapshotService({
      vms: vms.ctx,
      prepareGuest: async () => {
        events.push("prepare");
      },
      resumedGuest: async (vm) => {
        events.push(`resumed ${vm.name}`);
      },
    });
    const rootfs = path.join(home.home, "rootfs.ext4");
    await fs.writeFile(rootfs, "");
    store.insertKernel(kernel);
    const image: ImageRow = {
      id: "aaaaaaaaaaaa",
      name: "debian-bookworm",
      kernelRef: kernel.name,
      rootfsPath: rootfs,
      source: "test",
      digest: null,
      sizeBytes: 0,
      managed: false,
      createdAt: now,
      init: null,
      config: null,
    };
    store.insertImage(image);
    store.insertVm(
      vmRow({
        name: "dev",
        imageId: image.id,
        state: "running",
        ip: "10.0.2.15",
        teardownJson: JSON.stringify(fakeHandles),
      }),
    );
    await fs.mkdir(vms.ctx.dirOf("0123456789ab"), { recursive: true });
    await fn({ home, store, vms, snapshots, driver, events, saves, failSave, version });
  });
}

const mode = async (p: string) => (await fs.stat(p)).mode & 0o777;

test("a snapshot is saved into a staging dir, renamed into place (0700, files 0600), then recorded; the VM runs on", async () => {
  await withRig(async ({ home, store, vms, snapshots, events, saves }) => {
    const snap = await snapshots.take("dev", {});
    assert.equal(snap.name, "dev-snap-1", "named after the VM by default");
    assert.deepEqual(
      events,
      ["prepare", "save", "resumed dev"],
      "the identity reader runs before the save; the VM is told who it is once it runs on",
    );
    assert.equal(saves[0]!.resume, true);
    assert.equal(saves[0]!.imageRootfs, path.join(home.home, "rootfs.ext4"));
    assert.match(path.basename(saves[0]!.dir), /^\.staging-[0-9a-f]{12}$/);
    assert.deepEqual(saves[0]!.workDisk, {
      file: path.join(vms.ctx.dirOf("0123456789ab"), "work.ext4"),
      format: "raw",
    });
    const dir = path.join(home.layout.snapshotsDir, snap.id);
    assert.deepEqual(await fs.readdir(home.layout.snapshotsDir), [snap.id], "no staging dir left");
    assert.equal(await mode(dir), 0o700);
    const files = await fs.readdir(dir);
    assert.deepEqual(files.sort(), ["memory", "root.disk", "work.disk"]);
    for (const f of files) assert.equal(await mode(path.join(dir, f)), 0o600);
    const row = store.snapshots.byName("dev-snap-1")!;
    assert.equal(row.kind, "user");
    assert.equal(row.sourceVm, "dev");
    assert.equal(row.vmmVersion, "fake 1.0");
    assert.equal(row.accel, "tcg");
    assert.equal(row.bytes, 12_288);
    assert.equal(snap.pausedMs, 7);
    assert.equal((await vms.show("dev")).state, "running");
    assert.equal((await snapshots.take("dev", {})).name, "dev-snap-2");
    assert.deepEqual(
      snapshots.list().map((s) => s.name),
      ["dev-snap-1", "dev-snap-2"],
    );
  });
});

test("a save that fails leaves no staging dir, no row, and the VM running", async () => {
  await withRig(async ({ home, store, vms, snapshots, failSave }) => {
    failSave.value = true;
    await assert.rejects(snapshots.take("dev", { name: "base" }), /the disk is full/);
    assert.deepEqual(await fs.readdir(home.layout.snapshotsDir), []);
    assert.equal(store.snapshots.byName("base"), null);
    assert.equal((await vms.show("dev")).state, "running");
  });
});

test("--stop leaves the VM stopped and released; names are checked before anything is saved", async () => {
  await withRig(async ({ store, vms, snapshots, saves, events }) => {
    await assert.rejects(snapshots.take("dev", { name: "Bad_Name" }), /invalid snapshot name/);
    await assert.rejects(snapshots.take("nope", {}), /no VM named "nope"/);
    await snapshots.take("dev", { name: "base" });
    await assert.rejects(
      snapshots.take("dev", { name: "base" }),
      (err: unknown) => err instanceof BangerError && err.code === ErrorCode.AlreadyExists,
    );
    assert.equal(saves.length, 1, "a taken name saves nothing");
    events.length = 0;
    await snapshots.take("dev", { name: "last", stop: true });
    assert.equal(saves[1]!.resume, false);
    assert.deepEqual(events, ["prepare", "save"], "a VM left stopped is told nothing");
    // Released by the snapshot itself, not later by the exit watch or a `vm show`.
    const dev = store.getVmByName("dev")!;
    assert.equal(dev.state, "stopped");
    assert.equal(dev.teardownJson, null);
    assert.equal(vms.ctx.handles.has(dev.id), false, "its handles are released");
    await assert.rejects(
      snapshots.take("dev", {}),
      (err: unknown) => err instanceof BangerError && err.code === ErrorCode.InvalidState,
      "a stopped VM cannot be snapshotted",
    );
  });
});

test("a clone gets the snapshot's shape, overlays and the restore marker; the snapshot cannot go while it exists", async () => {
  await withRig(async ({ home, store, vms, snapshots, events, saves }) => {
    const snap = await snapshots.take("dev", { name: "base" });
    const clone = await snapshots.clone({ snapshot: "base", name: "try1", start: false });
    assert.equal(clone.state, "created");
    assert.equal(clone.snapshot, "base");
    assert.equal(clone.image, "debian-bookworm");
    assert.equal(events.at(-1), `clone ${snap.id}`);
    const row = store.getVmByName("try1")!;
    assert.equal(row.snapshotId, snap.id);
    const dir = vms.ctx.dirOf(row.id);
    assert.deepEqual(
      await readRestoreMarker(dir),
      { snapshot: "base", memory: path.join(home.layout.snapshotsDir, snap.id, "memory") },
      "the marker names the snapshot a start restores and its saved state",
    );
    assert.deepEqual((await fs.readdir(dir)).sort(), ["restore", "root.qcow2", "work.qcow2"]);
    assert.deepEqual(snapshots.show("base").clones, ["try1"]);
    // A clone saved in turn: its work disk is its qcow2 overlay.
    store.updateVm(row.id, { state: "running", teardownJson: JSON.stringify(fakeHandles) });
    await snapshots.take("try1", { name: "of-clone" });
    assert.deepEqual(saves.at(-1)!.workDisk, {
      file: path.join(dir, "work.qcow2"),
      format: "qcow2",
    });
    await snapshots.delete("of-clone");
    await assert.rejects(
      snapshots.clone({ snapshot: "base", name: "try1" }),
      /a VM named "try1" already exists/,
    );
    await assert.rejects(
      snapshots.delete("base"),
      (err: unknown) =>
        err instanceof BangerError &&
        err.code === ErrorCode.InvalidState &&
        /has clones: try1/.test(err.message) &&
        /banger vm delete try1/.test(err.hint ?? ""),
    );
    await vms.delete(["try1"]);
    assert.deepEqual(await snapshots.delete("base"), { deleted: "base", freedBytes: 12_288 });
    assert.equal(store.snapshots.byName("base"), null);
    assert.deepEqual(await fs.readdir(home.layout.snapshotsDir), []);
  });
});

test("a clone is refused, leaving nothing, when the host cannot restore the snapshot as it is now", async () => {
  await withRig(async ({ home, store, snapshots, version }) => {
    const snap = await snapshots.take("dev", { name: "base" });
    const refused = async (pattern: RegExp) => {
      await assert.rejects(
        snapshots.clone({ snapshot: "base", name: "c1", start: false }),
        (err: unknown) =>
          err instanceof BangerError &&
          err.code === ErrorCode.Precondition &&
          pattern.test(err.message),
      );
      assert.equal(store.getVmByName("c1"), null);
      assert.deepEqual(await fs.readdir(home.layout.vmsDir), ["0123456789ab"], "no clone dir");
    };
    version.value = "fake 2.0";
    await refused(/saved by fake 1\.0; this host runs fake 2\.0/);
    version.value = "fake 1.0";

    store.deleteKernel(kernel.name);
    await refused(/its kernel debian-cloud is gone/);
    store.insertKernel({ ...kernel, sha256: "bb", createdAt: "2026-02-01T00:00:00.000Z" });
    await refused(/kernel debian-cloud changed since it was taken/);
    store.deleteKernel(kernel.name);
    store.insertKernel(kernel);

    const kvm: SnapshotRow = { ...store.snapshots.byId(snap.id)!, id: "bbbbbbbbbbbb", name: "kvm" };
    store.snapshots.insert({ ...kvm, accel: "kvm" });
    await fs.cp(
      path.join(home.layout.snapshotsDir, snap.id),
      path.join(home.layout.snapshotsDir, kvm.id),
      {
        recursive: true,
      },
    );
    await assert.rejects(
      snapshots.clone({ snapshot: "kvm", name: "c1", start: false }),
      /saved under KVM; VMs here start under TCG/,
    );

    await fs.rm(path.join(home.layout.snapshotsDir, snap.id, SNAPSHOT_FILES.memory));
    await refused(/its file memory is missing/);
    await assert.rejects(snapshots.clone({ snapshot: "nope" }), /no snapshot named "nope"/);
  });
});

test("fork checks the clone's name before saving; a clone that cannot be made takes its snapshot with it", async () => {
  await withRig(async ({ store, snapshots, saves, driver }) => {
    store.insertVm(vmRow({ id: "cccccccccccc", name: "taken" }));
    await assert.rejects(snapshots.fork("dev", { clone: "taken" }), /a VM named "taken" already/);
    await assert.rejects(snapshots.fork("dev", { clone: "-bad" }), /invalid VM name/);
    assert.equal(saves.length, 0);
    // The save records one VMM version, the clone's check meets another: the clone is refused.
    driver.describe = async () => "fake 9";
    await assert.rejects(snapshots.fork("dev", {}), /this host runs fake 9/);
    assert.equal(saves.length, 1);
    assert.deepEqual(snapshots.list(), [], "the fork's snapshot went with the failed clone");
  });
});

test("image and kernel delete: refused while user snapshots use them; boot snapshots go with them", async () => {
  await withRig(async ({ home, store, vms, snapshots }) => {
    const { images, kernels } = imageServices(store, home.layout);
    const snap = await snapshots.take("dev", { name: "base" });
    await vms.kill("dev");
    await vms.delete(["dev"]);
    await assert.rejects(images.delete("debian-bookworm"), /has snapshot\(s\) base/);
    await assert.rejects(kernels.delete(kernel.name, { force: true }), /has snapshot\(s\) base/);
    // The same saved state as a boot snapshot: banger's own, it goes with its image.
    const row = store.snapshots.byId(snap.id)!;
    store.snapshots.delete(snap.id);
    store.snapshots.insert({ ...row, name: "boot-1", kind: "boot", shapeKey: "shape" });
    await images.delete("debian-bookworm");
    assert.deepEqual(store.snapshots.list(), []);
    assert.deepEqual(await fs.readdir(home.layout.snapshotsDir), []);
  });
});

test("the start-up sweep removes unfinished and unowned snapshot dirs and drops rows whose dir is gone", async () => {
  await withRig(async ({ home, store, snapshots }) => {
    const kept = await snapshots.take("dev", { name: "kept" });
    const lost = await snapshots.take("dev", { name: "lost" });
    await snapshots.clone({ snapshot: "lost", name: "orphan", start: false });
    const dir = home.layout.snapshotsDir;
    await fs.rm(path.join(dir, lost.id), { recursive: true });
    await fs.mkdir(path.join(dir, ".staging-0123456789ab"));
    await fs.writeFile(path.join(dir, ".staging-0123456789ab", "memory"), "half");
    await fs.mkdir(path.join(dir, "fedcba987654"));
    await fs.mkdir(path.join(dir, "mine"));
    const outside = path.join(home.home, "outside");
    await fs.mkdir(outside);
    await fs.symlink(outside, path.join(dir, "abcdefabcdef"));

    const swept = await sweepOrphans({ store, layout: home.layout });
    assert.deepEqual(swept.removed.filter((p) => p.startsWith(dir)).sort(), [
      path.join(dir, ".staging-0123456789ab"),
      path.join(dir, "fedcba987654"),
    ]);
    assert.ok(swept.skipped.includes(path.join(dir, "mine")));
    assert.ok(
      swept.skipped.includes(path.join(dir, "abcdefabcdef")),
      "a symlink is never followed",
    );
    assert.deepEqual(swept.droppedSnapshots, ["lost"]);
    assert.deepEqual((await fs.readdir(dir)).sort(), ["abcdefabcdef", kept.id, "mine"].sort());
    await fs.access(outside);
    assert.deepEqual(
      snapshots.list().map((s) => s.name),
      ["kept"],
    );
    assert.equal(store.getVmByName("orphan")?.snapshotId, null, "the clone no longer names it");
  });
});

test("vm.fork's answer keeps the clone's warnings and whether it was restored", () => {
  const answer = {
    id: "0123456789ab",
    name: "dev-fork-1",
    state: "running",
    image: "debian-bookworm",
    kernel: "debian-cloud",
    vcpu: 1,
    memoryBytes: 2 ** 30,
    diskBytes: 2 ** 30,
    ip: "10.0.2.15",
    vmm: "qemu",
    createdAt: now,
    snapshot: "dev-snap-1",
    warnings: [
      "could not restore VM dev-fork-1 from snapshot dev-snap-1 (x); booted it cold instead",
    ],
    restored: false,
  };
  // The daemon validates every answer against its schema, which drops keys it does not name.
  assert.deepEqual(methods["vm.fork"].result.parse(answer), answer);
});
