// What the VM verbs leave to their backends: the driver's root disk and files, and the guest shell's ssh.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { GuestShell } from "../src/guest/shell.js";
import { UserNetwork } from "../src/net/user-network.js";
import type { NetworkBackend } from "../src/net/backend.js";
import type { GuestTarget } from "../src/guest/ssh.js";
import type { Store } from "../src/store/store.js";
import { createCommandRunner, type CommandRunner } from "../src/system/runner.js";
import type { Driver, VmHandles } from "../src/vmm/driver.js";
import { FirecrackerDriver } from "../src/vmm/firecracker/driver.js";
import { QemuDriver } from "../src/vmm/qemu/driver.js";
import { selectVmm } from "../src/vmm/select.js";
import { VmService } from "../src/vm/service.js";
import { fakeDriver, fakeHandles } from "./helpers/fake-driver.js";
import { imageServices } from "./helpers/services.js";
import { withTempStore, type TempLayout } from "./helpers/temp-home.js";
import { vmRow } from "./helpers/vm-row.js";

const MiB = 1024 * 1024;

/** A VmService over a real store with both real drivers (nothing here boots a VM). */
function service(
  home: TempLayout,
  store: Store,
  runner: CommandRunner,
  qemu?: Driver,
  network?: NetworkBackend,
): VmService {
  const { kernels, images } = imageServices(store, home.layout, { runner });
  return new VmService({
    store,
    layout: home.layout,
    runner,
    images,
    kernels,
    drivers: { qemu: qemu ?? new QemuDriver(runner), firecracker: new FirecrackerDriver(runner) },
    pickVmm: async () => "qemu",
    ...(network ? { network } : {}),
    host: { cpus: 2, memoryBytes: 4 * 2 ** 30 },
    stopDeadlineMs: 1000,
  });
}

/** Handles of a Firecracker VM whose process is not there (pid 1 is no firecracker naming this socket). */
function deadFirecracker(dir: string): VmHandles {
  return {
    vmm: "firecracker",
    pid: 1,
    controlSocket: path.join(dir, "firecracker.sock"),
    consoleLog: path.join(dir, "console.log"),
    sshHost: "172.31.9.2",
    sshPort: 22,
    tap: null,
  };
}

test("a Firecracker root disk is a private copy of the image, and stats report its real bytes", async () => {
  await withTempStore(async (home, store) => {
    const runner = createCommandRunner();
    const row = vmRow({ name: "fc", vmm: "firecracker", state: "stopped" });
    store.insertVm(row);
    const dir = path.join(home.layout.vmsDir, row.id);
    await fs.mkdir(dir, { recursive: true });
    const backing = path.join(home.home, "rootfs.ext4");
    await fs.writeFile(backing, randomBytes(MiB), { mode: 0o644 });
    const driver = new FirecrackerDriver(runner);
    await driver.rootDisk.prepare(backing, dir);
    const root = driver.rootDisk.path(dir);
    assert.equal(path.basename(root), "root.ext4");
    assert.equal((await fs.stat(root)).mode & 0o777, 0o600, "the guest's disk is the user's alone");

    const stats = await service(home, store, runner).stats("fc");
    // It read root.qcow2, which a Firecracker VM does not have, and said 0.
    assert.ok(stats.overlayBytes >= MiB, `overlayBytes ${stats.overlayBytes} < ${MiB}`);
  });
});

test("a Firecracker VM found dead at reconcile loses its API socket, as does one killed", async () => {
  await withTempStore(async (home, store) => {
    const runner = createCommandRunner();
    for (const name of ["gone", "killed"]) {
      const id = randomBytes(6).toString("hex");
      const dir = path.join(home.layout.vmsDir, id);
      await fs.mkdir(dir, { recursive: true });
      const handles = deadFirecracker(dir);
      await fs.writeFile(handles.controlSocket, "");
      store.insertVm(
        vmRow({
          id,
          name,
          vmm: "firecracker",
          state: "running",
          teardownJson: JSON.stringify(handles),
        }),
      );
    }
    const vms = service(home, store, runner);
    const socketOf = (name: string) =>
      path.join(home.layout.vmsDir, store.getVmByName(name)!.id, "firecracker.sock");

    await vms.kill("killed");
    await assert.rejects(fs.access(socketOf("killed")), "kill removes firecracker.sock");
    await vms.reconcile();
    assert.equal(store.getVmByName("gone")?.state, "stopped");
    await assert.rejects(fs.access(socketOf("gone")), "reconcile removes firecracker.sock");
  });
});

test("GuestShell's ssh carries keep-alives, BatchMode and no ssh config", () => {
  const target: GuestTarget = {
    vmId: "0123456789ab",
    vmName: "box",
    host: "127.0.0.1",
    port: 2222,
    identity: { privateKey: "/k", publicKey: "/k.pub", knownHosts: "/kh" },
  };
  const argv = new GuestShell(createCommandRunner()).argv(target, "true");
  for (const opt of ["ServerAliveInterval=15", "ServerAliveCountMax=4", "BatchMode=yes"])
    assert.ok(argv.includes(opt), `${opt} missing from ${argv.join(" ")}`);
  assert.deepEqual(argv.slice(0, 2), ["-F", "/dev/null"]);
  assert.deepEqual(argv.slice(-2), ["root@127.0.0.1", "true"]);
});

test("vm health, ports and stop reach the guest with keep-alives", async () => {
  await withTempStore(async (home, store) => {
    const sshArgs: string[][] = [];
    const runner: CommandRunner = {
      run: async (cmd, args) => {
        if (cmd === "ssh") sshArgs.push(args);
        return { code: 0, signal: null, stdout: "", stderr: "" };
      },
      which: async (cmd) => `/usr/bin/${cmd}`,
    };
    const handles = fakeHandles;
    const driver = fakeDriver(runner);
    store.insertVm(
      vmRow({
        name: "box",
        state: "running",
        ip: "10.0.2.15",
        teardownJson: JSON.stringify(handles),
      }),
    );
    const vms = service(home, store, runner, driver);
    assert.equal((await vms.health("box")).ssh, true);
    await vms.ports("box");
    await vms.stop("box");
    assert.equal(sshArgs.length, 3, "health, ports and the poweroff request each ran ssh");
    for (const args of sshArgs)
      assert.ok(
        args.includes("ServerAliveInterval=15") && args.includes("ServerAliveCountMax=4"),
        `no keep-alives in: ssh ${args.join(" ")}`,
      );
  });
});

test("vmm = auto reads the Firecracker driver's features, not its name", () => {
  const fc = new FirecrackerDriver(createCommandRunner()).features;
  assert.equal(selectVmm("auto", "kvm", true, false, fc), "qemu", "no user-mode networking");
  assert.equal(
    selectVmm("auto", "kvm", true, false, { ...fc, userNetworking: true }),
    "firecracker",
    "a Firecracker with user-mode networking would need no bridge",
  );
  assert.equal(selectVmm("auto", "tcg", true, true, { ...fc, needsKvm: false }), "firecracker");
});

test("user-mode networking refuses a VMM without it before starting passt", async () => {
  const asked: string[] = [];
  const runner: CommandRunner = {
    run: async (cmd) => {
      asked.push(cmd);
      return { code: 0, signal: null, stdout: "", stderr: "" };
    },
    which: async (cmd) => {
      asked.push(`which ${cmd}`);
      return `/usr/bin/${cmd}`;
    },
  };
  const vm = { id: "0123456789ab", name: "fc", ip: null, nat: true };
  await assert.rejects(
    new UserNetwork(runner).attachVm(vm, {
      vmDir: "/nonexistent",
      driver: new FirecrackerDriver(runner).features,
      progress: () => {},
    }),
    /Firecracker has no user-mode networking/,
  );
  assert.deepEqual(asked, [], "nothing was started");
});

test("a kill the VMM outlives keeps its sockets; a network that fails to let go still leaves the console released", async () => {
  await withTempStore(async (home, store) => {
    const runner = createCommandRunner();
    const row = vmRow({ name: "stubborn", state: "running" });
    const dir = path.join(home.layout.vmsDir, row.id);
    await fs.mkdir(dir, { recursive: true });
    const handles: VmHandles = { ...fakeHandles, controlSocket: path.join(dir, "qmp.sock") };
    await fs.writeFile(handles.controlSocket, "");
    store.insertVm({ ...row, teardownJson: JSON.stringify(handles) });
    const released: string[] = [];
    // kill gives up while the process lives on (killVmm's own wait ran out).
    const qemu: Driver = {
      ...fakeDriver(runner),
      kill: async () => {},
      status: async () => "running",
      release: () => released.push("console"),
    };
    const network: NetworkBackend = {
      attachVm: async () => {
        throw new Error("not in this test");
      },
      releaseVm: async () => {
        throw new Error("helper: tap busy");
      },
      adoptVm: async () => {},
    };
    const vms = service(home, store, runner, qemu, network);
    await assert.rejects(vms.kill("stubborn"), /tap busy/);
    assert.deepEqual(released, ["console"], "the console recorder is let go first");
    await fs.access(handles.controlSocket); // still there: the live QEMU's QMP socket
  });
});

test("start passes the init recorded on the image as banger.init=, and none for /sbin/init", async () => {
  await withTempStore(async (home, store) => {
    const runner = createCommandRunner();
    store.insertKernel({
      name: "debian-cloud",
      version: null,
      source: null,
      dir: path.join(home.home, "no-kernel-dir"),
      sha256: null,
      createdAt: "now",
    });
    const cmdlines: string[] = [];
    // The spec is all this test wants: the start stops there.
    const qemu: Driver = {
      ...fakeDriver(runner),
      start: async (spec) => {
        cmdlines.push(spec.kernel.cmdline);
        throw new Error("spec seen");
      },
      status: async () => "stopped",
    };
    const network: NetworkBackend = {
      attachVm: async () => ({
        vmm: { mode: "user", sshPort: 1 },
        handles: { tap: null },
        kernelArgs: [],
        ip: "10.0.2.15",
        mac: null,
      }),
      releaseVm: async () => {},
      adoptVm: async () => {},
    };
    const vms = service(home, store, runner, qemu, network);
    for (const [i, init] of ["/usr/lib/banger/init", "/sbin/init", null].entries()) {
      const imageId = `img${i}`;
      store.insertImage({
        id: imageId,
        name: `image-${i}`,
        kernelRef: "debian-cloud",
        rootfsPath: "/x/rootfs.ext4",
        source: null,
        digest: null,
        sizeBytes: null,
        managed: true,
        createdAt: "now",
        init,
        config: null,
      });
      const row = vmRow({ id: `vm${i}`.padEnd(12, "0"), name: `vm-${i}`, imageId });
      store.insertVm(row);
      await assert.rejects(vms.start(row.name), /spec seen/);
    }
    assert.match(cmdlines[0]!, / banger\.init=\/usr\/lib\/banger\/init( |$)/);
    assert.doesNotMatch(cmdlines[1]!, /banger\.init=/);
    assert.doesNotMatch(cmdlines[2]!, /banger\.init=/);
  });
});
