// A real bangerd killed half-way (SIGKILL, as a crash or OOM kill would) leaves directories no
// row owns; the next real bangerd must sweep them and keep everything a row owns.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fsSync from "node:fs";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";
import Database from "better-sqlite3";
import { bangerCli } from "./helpers/cli.js";
import { cleanupE2eHome } from "./helpers/e2e-cleanup.js";
import { ensureBuilt } from "./helpers/build.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";
import { waitFor } from "./helpers/wait-for.js";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "..");
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
});

async function exists(p: string): Promise<boolean> {
  return fs.lstat(p).then(
    () => true,
    () => false,
  );
}

async function pidAlive(pid: number): Promise<boolean> {
  return exists(`/proc/${pid}`);
}

/** SIGKILLs the home's bangerd (by its pid file) and waits until it is gone. */
async function killDaemon(home: TempLayout): Promise<void> {
  const pid = Number((await fs.readFile(home.layout.pidFile, "utf8")).trim());
  assert.ok(pid > 1, "bangerd wrote its pid");
  process.kill(pid, "SIGKILL");
  await waitFor("bangerd to die", 10_000, async () => ((await pidAlive(pid)) ? null : true));
}

/** A TCP server that takes connections and never answers: a mirror that hangs. */
async function stallingServer(): Promise<{
  url: string;
  connections: () => number;
  close(): Promise<void>;
}> {
  const sockets = new Set<net.Socket>();
  let count = 0;
  const server = net.createServer((s) => {
    count++;
    sockets.add(s);
    s.on("error", () => {});
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/debian`,
    connections: () => count,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** Process groups of processes whose command line names `mark` (the home). */
async function groupsNaming(mark: string): Promise<number[]> {
  const { stdout } = await run("ps", ["-eo", "pgid=,args="]);
  const groups = new Set<number>();
  for (const line of stdout.split("\n")) {
    const m = /^\s*(\d+)\s+(.*)$/.exec(line);
    if (m && m[2]!.includes(mark) && !m[2]!.includes("bangerd")) groups.add(Number(m[1]));
  }
  return [...groups].filter((g) => g > 1 && g !== process.pid);
}

/**
 * Runs a real `vm create` and freezes the daemon (SIGSTOP) the moment its vms/<id> appears,
 * before the disks are done and the row is written (checked in the store), then SIGKILLs it.
 * The window is the disk building (qemu-img, mkfs.ext4 -d); should the freeze come too late
 * (the row is there), the VM is deleted and the try repeated. Returns the orphan dir.
 */
async function killMidCreate(home: TempLayout, env: NodeJS.ProcessEnv): Promise<string> {
  const { ok } = bangerCli(() => env);
  for (let attempt = 1; attempt <= 5; attempt++) {
    await ok("daemon", "start");
    const pid = Number((await fs.readFile(home.layout.pidFile, "utf8")).trim());
    const before = new Set(await fs.readdir(home.layout.vmsDir));
    let appeared: string | null = null;
    const watcher = fsSync.watch(home.layout.vmsDir, (_event, name) => {
      if (appeared || !name || before.has(name)) return;
      process.kill(pid, "SIGSTOP");
      appeared = name;
    });
    const name = `doomed-${attempt}`;
    const create = run(
      path.join(root, "bin", "banger"),
      ["vm", "create", "--name", name, "--image", "tiny", "--no-start"],
      { env, timeout: 60_000 },
    ).catch((err: unknown) => err);
    await waitFor("vms/<id> of the create", 30_000, async () => appeared);
    watcher.close();
    const db = new Database(home.layout.dbFile, { readonly: true });
    const row = db.prepare("SELECT id FROM vms WHERE name = ?").get(name);
    db.close();
    process.kill(pid, "SIGKILL");
    await waitFor("bangerd to die", 10_000, async () => ((await pidAlive(pid)) ? null : true));
    await create;
    const dir = path.join(home.layout.vmsDir, appeared!);
    // qemu-img or mkfs.ext4 may still be finishing in the dir: let them, so nothing writes there later.
    await waitFor("the create's tools to finish", 30_000, async () =>
      (await groupsNaming(dir)).length === 0 ? true : null,
    );
    if (!row) return dir;
    await ok("vm", "delete", name); // the freeze came after the row: try again
  }
  throw new Error("never froze a create between its vms/<id> and its row in 5 tries");
}

test(
  "a daemon killed mid-create and during an image build: the next one sweeps what no row owns, and keeps a real image, kernel and VM",
  { timeout: 240_000 },
  async () => {
    await ensureBuilt(root);
    const home = await tempLayout("banger-sweep-");
    const mirror = await stallingServer();
    // mmdebstrap's own temp dir goes under the home too, so nothing lands in /tmp.
    const tmp = path.join(home.home, "tmp");
    await fs.mkdir(tmp);
    const env = { ...home.env, TMPDIR: tmp, BANGER_DEBIAN_MIRROR: mirror.url };
    cleanups.push(async () => {
      for (const g of await groupsNaming(home.home)) {
        try {
          process.kill(-g, "SIGKILL");
        } catch {
          // gone already
        }
      }
      await mirror.close();
      await cleanupE2eHome(home);
    });
    const { ok } = bangerCli(() => env);

    // What rows own: a managed image (promoted into images/<id>/), its kernel, a created VM.
    const rootfs = path.join(home.home, "tiny.ext4");
    await run("truncate", ["-s", "8M", rootfs]);
    await run("mkfs.ext4", ["-q", "-F", rootfs]);
    const kernelFile = path.join(home.home, "vmlinuz");
    await fs.writeFile(kernelFile, Buffer.alloc(4096, 7));
    await ok("image", "register", "--name", "tiny", "--rootfs", rootfs, "--kernel", kernelFile);
    await ok("image", "promote", "tiny");
    await ok("vm", "create", "--name", "keep", "--image", "tiny", "--no-start");
    const image = JSON.parse((await ok("image", "show", "tiny", "--json")).stdout) as {
      id: string;
      rootfsPath: string;
    };
    const vm = JSON.parse((await ok("vm", "show", "keep", "--json")).stdout) as { id: string };
    const kernel = JSON.parse((await ok("kernel", "show", "tiny-kernel", "--json")).stdout) as {
      dir: string;
    };
    const imageDir = path.join(home.layout.imagesDir, image.id);
    assert.equal(path.dirname(image.rootfsPath), imageDir, "the image is banger's own copy");
    const vmDir = path.join(home.layout.vmsDir, vm.id);
    assert.ok(await exists(path.join(vmDir, "work.ext4")));

    // A real create killed after vms/<id> exists but before its row: the daemon that the build
    // below starts sweeps it before it serves the build.
    const orphanVm = await killMidCreate(home, env);
    assert.ok(await exists(orphanVm), "the killed create left its vms/<id>");
    assert.notEqual(orphanVm, vmDir);

    // A real build, killed in its staging phase: mmdebstrap is waiting on the (hanging) mirror.
    let ended: string | null = null;
    const build = run(path.join(root, "bin", "banger"), ["image", "build", "half"], {
      env,
      timeout: 120_000,
    }).then(
      (r) => (ended = `exited 0: ${r.stdout}`),
      (err: { stderr?: string }) => (ended = err.stderr ?? String(err)),
    );
    const staging = await waitFor("the build's staging dir", 60_000, async () => {
      if (ended !== null && !ended.includes("ECONNRESET")) assert.fail(`the build ended: ${ended}`);
      const names = await fs.readdir(home.layout.imagesDir).catch(() => [] as string[]);
      const s = names.find((n) => n.endsWith(".staging"));
      return s && mirror.connections() > 0 ? path.join(home.layout.imagesDir, s) : null;
    });
    assert.equal(
      await exists(orphanVm),
      false,
      "the create's orphan was swept before the build ran",
    );
    assert.ok(await exists(path.join(vmDir, "work.ext4")), "the real VM's dir was kept");
    await killDaemon(home);
    // VMs outlive the daemon on purpose and so does the build's mmdebstrap: end it (not banger's job).
    for (const g of await groupsNaming(home.home)) process.kill(-g, "SIGKILL");
    await build;
    assert.match(path.basename(staging), /^[0-9a-f]{12}\.staging$/);
    assert.ok(await exists(staging), "the killed build left its staging dir");

    // A kernel install killed half-way: made as the code names them (a real one needs apt).
    const orphanKernel = path.join(home.layout.kernelsDir, "debian-cloud.staging-0badf00d");
    const orphanKernelTmp = path.join(home.layout.kernelsDir, "banger-kernel-Ab3dE9");
    for (const d of [orphanKernel, orphanKernelTmp]) {
      await fs.mkdir(d);
      await fs.writeFile(path.join(d, "vmlinuz"), "half");
    }
    // Finished dirs no row names (a lost banger.db): maybe all the user has of a VM's disks, so
    // they are reported, never removed.
    const unownedKernel = path.join(home.layout.kernelsDir, "debian-cloud");
    const unownedImage = path.join(home.layout.imagesDir, "0123456789ab");
    const unownedVm = path.join(home.layout.vmsDir, "ba5eba11dead");
    for (const [d, file] of [
      [unownedKernel, "vmlinuz"],
      [unownedImage, "rootfs.ext4"],
      [unownedVm, "work.ext4"],
    ] as const) {
      await fs.mkdir(d);
      await fs.writeFile(path.join(d, file), "someone's data");
    }
    // Never followed or removed: a symlink named like a VM id, and names banger never makes.
    const outside = path.join(home.home, "outside");
    await fs.mkdir(outside);
    await fs.writeFile(path.join(outside, "precious"), "keep me");
    const link = path.join(home.layout.vmsDir, "ba5eba11c0de");
    await fs.symlink(outside, link);
    const foreign = path.join(home.layout.imagesDir, "my-notes");
    await fs.mkdir(foreign);

    // A snapshot save killed before its rename (a staging dir), one killed between the rename and
    // its row or mid-delete (a dir no row owns), and a row whose dir is gone, which `keep` names.
    const snapStaging = path.join(home.layout.snapshotsDir, ".staging-0123456789ab");
    const snapUnowned = path.join(home.layout.snapshotsDir, "0123456789ac");
    for (const d of [snapStaging, snapUnowned]) {
      await fs.mkdir(d, { recursive: true });
      await fs.writeFile(path.join(d, "memory"), "half");
    }
    const db = new Database(home.layout.dbFile);
    db.prepare(
      `INSERT INTO snapshots (id, name, kind, image_id, kernel_ref, kernel_fingerprint, vmm, vmm_version,
                              accel, vcpu, memory_bytes, disk_bytes, bytes, created_at)
       VALUES ('0123456789ad', 'lost', 'user', ?, 'tiny-kernel', '-', 'qemu', 'x', 'tcg', 1, 1, 1, 1, 'now')`,
    ).run(image.id);
    db.prepare("UPDATE vms SET snapshot_id = '0123456789ad' WHERE id = ?").run(vm.id);
    db.close();

    // The next daemon (started on demand by this command) sweeps before it answers.
    await ok("image", "list");
    for (const gone of [snapStaging, snapUnowned])
      assert.equal(await exists(gone), false, `${gone} was swept`);
    assert.deepEqual(JSON.parse((await ok("snapshot", "list", "--json")).stdout), []);
    assert.equal(
      JSON.parse((await ok("vm", "show", "keep", "--json")).stdout).snapshot,
      null,
      "the VM no longer names the lost snapshot",
    );
    for (const gone of [staging, orphanKernel, orphanKernelTmp])
      assert.equal(await exists(gone), false, `${gone} was swept`);
    for (const unowned of [unownedKernel, unownedImage, unownedVm])
      assert.equal(
        await fs.readFile(path.join(unowned, (await fs.readdir(unowned))[0]!), "utf8"),
        "someone's data",
        `${unowned} (finished, no row) was kept`,
      );
    for (const kept of [
      imageDir,
      image.rootfsPath,
      vmDir,
      path.join(vmDir, "work.ext4"),
      kernel.dir,
    ])
      assert.ok(await exists(kept), `${kept} (a row owns it) was kept`);
    assert.ok(await exists(link), "a symlink is left alone");
    assert.equal(await fs.readFile(path.join(outside, "precious"), "utf8"), "keep me");
    assert.ok(await exists(foreign), "a name banger never makes is left alone");
    const log = await fs.readFile(home.layout.daemonLogFile, "utf8");
    for (const gone of [staging, orphanVm, orphanKernel])
      assert.ok(
        log.split("\n").some((l) => l.includes("no VM, image or kernel owns") && l.includes(gone)),
        `the log says ${gone} was removed`,
      );
    for (const unowned of [unownedKernel, unownedImage, unownedVm])
      assert.ok(
        log
          .split("\n")
          .some((l) => l.includes("finished directory: left alone") && l.includes(unowned)),
        `the log reports ${unowned}`,
      );
    assert.ok(
      log
        .split("\n")
        .some((l) => l.includes("a snapshot's directory is gone") && l.includes("keep")),
      "the log names the lost snapshot's clone",
    );
    // What was kept still works.
    assert.equal(JSON.parse((await ok("vm", "show", "keep", "--json")).stdout).id, vm.id);
    await ok("image", "show", "tiny");
  },
);
