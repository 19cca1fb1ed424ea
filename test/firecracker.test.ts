import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { createWorkDisk } from "../src/disk/work-disk.js";
import { DEFAULT_KERNEL_CMDLINE, readKernelDir } from "../src/kernel/kernel-dir.js";
import { detectAccel, realAccelDeps } from "../src/system/accel.js";
import { createCommandRunner, runChecked } from "../src/system/runner.js";
import type { VmHandles, VmSpec } from "../src/vmm/driver.js";
import { apiRequest } from "../src/vmm/firecracker/api.js";
import { FirecrackerDriver } from "../src/vmm/firecracker/driver.js";
import {
  createSnapshot,
  describeInstance,
  drivesAt,
  firecrackerRequests,
  restoreRequests,
  vmState,
} from "../src/vmm/firecracker/requests.js";
import { loadApi, requestErrors, validate } from "./helpers/firecracker-api.js";
import { sharedDefaultImage } from "./helpers/shared-image.js";

const spec: VmSpec = {
  id: "abc123",
  name: "dev",
  vcpu: 2,
  memoryBytes: 1024 ** 3,
  accel: "kvm",
  kernel: {
    vmlinuz: "/k/vmlinuz",
    vmlinux: "/k/vmlinux",
    initrd: "/k/initrd.img",
    cmdline: "console=ttyS0 root=/dev/vda",
  },
  rootDisk: "/v/root.ext4",
  workDisk: "/v/work.ext4",
  dir: "/v",
  network: { mode: "tap", tap: "bg-abc123", mac: "52:54:ab:c1:23:00", ip: "172.30.0.2" },
};

test("every request body the driver sends matches Firecracker's API definition", async () => {
  const api = await loadApi();
  const boot = firecrackerRequests(spec);
  assert.deepEqual(
    boot.map((r) => r.path),
    [
      "/logger",
      "/machine-config",
      "/boot-source",
      "/drives/root",
      "/drives/work",
      "/network-interfaces/eth0",
      "/vsock",
      "/actions",
    ],
  );
  const restore = restoreRequests({ ...spec, restore: { memory: "/s/snap1/memory" } });
  const snapshot = [
    vmState("Paused"),
    ...drivesAt({ root: "/s/snap1/root.disk", work: "/s/snap1/work.disk" }),
    createSnapshot("/s/snap1"),
    vmState("Resumed"),
  ];
  const requests = [
    ...boot,
    ...restore,
    ...snapshot,
    describeInstance,
    { method: "PUT" as const, path: "/actions", body: { action_type: "SendCtrlAltDel" } },
  ];
  for (const req of requests) assert.deepEqual(requestErrors(api, req), []);
});

test("a restore loads the snapshot paused onto the clone's own tap, vsock and disks, then runs it", () => {
  const requests = restoreRequests({
    ...spec,
    rootDisk: "/v2/root.ext4",
    workDisk: "/v2/work.ext4",
    dir: "/v2",
    network: { mode: "tap", tap: "bg-clone1", mac: "52:54:ab:c1:23:99", ip: "172.30.0.9" },
    restore: { memory: "/s/snap1/memory" },
  });
  // No machine-config or boot-source: the snapshot holds them, and a load takes only a logger first.
  assert.deepEqual(
    requests.map((r) => `${r.method} ${r.path}`),
    ["PUT /logger", "PUT /snapshot/load", "PATCH /drives/root", "PATCH /drives/work", "PATCH /vm"],
  );
  assert.deepEqual(requests[1]!.body, {
    snapshot_path: "/s/snap1/vmstate",
    mem_backend: { backend_type: "File", backend_path: "/s/snap1/memory" },
    resume_vm: false,
    network_overrides: [{ iface_id: "eth0", host_dev_name: "bg-clone1" }],
    vsock_override: { uds_path: "/v2/vsock.sock" },
  });
  assert.deepEqual(
    requests.slice(2, 4).map((r) => r.body),
    [
      { drive_id: "root", path_on_host: "/v2/root.ext4" },
      { drive_id: "work", path_on_host: "/v2/work.ext4" },
    ],
  );
  assert.deepEqual(requests[4]!.body, { state: "Resumed" });
  assert.match(String((requests[0]!.body as { log_path: string }).log_path), /^\/v2\//);
});

test("the validator itself catches wrong bodies", async () => {
  const api = await loadApi();
  const schema = { $ref: "#/definitions/MachineConfiguration" };
  assert.deepEqual(validate(api, schema, { vcpu_count: 2, mem_size_mib: 512 }, "mc"), []);
  assert.ok(
    validate(api, schema, { vcpu_count: 2 }, "mc").some((e) =>
      e.includes("mem_size_mib: required"),
    ),
  );
  assert.ok(
    validate(api, schema, { vcpu_count: 2, mem_size_mib: 512, memory: 1 }, "mc").some((e) =>
      e.includes("not in the API"),
    ),
  );
  assert.ok(
    validate(api, schema, { vcpu_count: "2", mem_size_mib: 512 }, "mc").some((e) =>
      e.includes("expected an integer"),
    ),
  );
});

test("the validator checks the items of arrays", async () => {
  const api = await loadApi();
  const load = { $ref: "#/definitions/SnapshotLoadParams" };
  assert.ok(
    validate(
      api,
      load,
      { snapshot_path: "/s", network_overrides: [{ iface_id: "eth0" }] },
      "l",
    ).some((e) => e.includes("network_overrides[0].host_dev_name: required")),
  );
  assert.ok(
    validate(api, load, { snapshot_path: "/s", network_overrides: "eth0" }, "l").some((e) =>
      e.includes("expected an array"),
    ),
  );
});

test("the driver refuses what Firecracker cannot do", () => {
  assert.throws(
    () => firecrackerRequests({ ...spec, kernel: { ...spec.kernel, vmlinux: null } }),
    /needs an uncompressed vmlinux/,
  );
  assert.throws(
    () => firecrackerRequests({ ...spec, network: { mode: "user", sshPort: 2222 } }),
    /no user-mode networking/,
  );
  const restore = { memory: "/s/snap1/memory" };
  assert.throws(
    () => restoreRequests({ ...spec, restore, network: { mode: "user", sshPort: 2222 } }),
    /no user-mode networking/,
  );
  // A QEMU clone's work disk is a qcow2 overlay: Firecracker would read its header as ext4.
  assert.throws(
    () => restoreRequests({ ...spec, restore, workDiskFormat: "qcow2" }),
    /reads raw disks only/,
  );
  assert.throws(() => firecrackerRequests({ ...spec, workDiskFormat: "qcow2" }), /raw disks only/);
});

test("the API client speaks HTTP over the unix socket", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-"));
  const socket = path.join(dir, "api.sock");
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push(`${req.method} ${req.url} ${req.headers["content-type"]} ${body}`);
      res
        .writeHead(req.url === "/bad" ? 400 : 204)
        .end(req.url === "/bad" ? '{"fault_message":"no"}' : undefined);
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  try {
    assert.equal(
      (
        await apiRequest(socket, {
          method: "PUT",
          path: "/actions",
          body: { action_type: "InstanceStart" },
        })
      ).status,
      204,
    );
    const bad = await apiRequest(socket, { method: "PUT", path: "/bad", body: {} });
    assert.equal(bad.status, 400);
    assert.match(bad.body, /fault_message/);
    assert.deepEqual(seen[0], 'PUT /actions application/json {"action_type":"InstanceStart"}');
  } finally {
    server.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test("a Firecracker started again on the same socket path is reached afresh, not over a pooled connection", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-"));
  const socket = path.join(dir, "api.sock");
  const serve = async (state: string) => {
    const server = http.createServer((_req, res) =>
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ state })),
    );
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    return server;
  };
  try {
    // A VM stopped and started again: a new process listens where the old one did.
    const first = await serve("Running");
    assert.match((await apiRequest(socket, describeInstance)).body, /Running/);
    first.closeAllConnections();
    await new Promise<void>((resolve) => first.close(() => resolve()));
    const second = await serve("Paused");
    try {
      assert.match((await apiRequest(socket, describeInstance)).body, /Paused/);
    } finally {
      second.closeAllConnections();
      await new Promise<void>((resolve) => second.close(() => resolve()));
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test(
  "a frozen Firecracker (a socket that never answers) costs the request's time limit, and no time left means no wait",
  { timeout: 10_000 },
  async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-"));
    const socket = path.join(dir, "api.sock");
    // Accepts and never answers, like a VMM that is SIGSTOPped.
    const held = new Set<net.Socket>();
    const server = net.createServer((s) => {
      held.add(s);
      s.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(socket, resolve));
    try {
      const req = {
        method: "PUT",
        path: "/actions",
        body: { action_type: "SendCtrlAltDel" },
      } as const;
      await assert.rejects(apiRequest(socket, req, 200), /timed out/);
      // Node treats an http timeout of 0 as none at all: this hung until the test's timeout.
      await assert.rejects(apiRequest(socket, req, 0), /timed out/);
    } finally {
      server.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  },
);

// The bound covers the wait for the VM lane (test/helpers/vm-lane.ts, at most 20 min while other
// VM files of the run boot theirs) and the boot itself.
test("a real Firecracker binary boots a VM", { timeout: 25 * 60_000 }, async (t) => {
  // Each precondition Firecracker really has, checked in turn; a missing one skips with its reason.
  const runner = createCommandRunner();
  const binary = await runner.which("firecracker");
  if (!binary) {
    t.skip(
      "no firecracker binary on PATH on this machine: the driver was checked against the API definition only",
    );
    return;
  }
  const accel = await detectAccel(realAccelDeps());
  if (accel.kind !== "kvm") {
    t.skip(
      `${binary} is installed, but Firecracker needs KVM and this machine has none: ${accel.reason}`,
    );
    return;
  }
  if (process.getuid?.() !== 0) {
    t.skip(
      `${binary} is installed, but its tap device needs root to create, and this test is not root`,
    );
    return;
  }
  const shared = await sharedDefaultImage(process.env);
  if (!shared) {
    t.skip(
      `${binary} is installed, but no kernel and image to boot: set BANGER_TEST_SHARED to a directory (make test does)`,
    );
    return;
  }
  const kernel = await readKernelDir(shared.kernelDir);
  assert.ok(kernel.vmlinux, `the shared kernel in ${shared.kernelDir} has a vmlinux`);

  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fc-boot-"));
  const tap = `bg-fct${randomBytes(3).toString("hex")}`;
  const driver = new FirecrackerDriver(runner);
  let handles: VmHandles | null = null;
  try {
    await runChecked(runner, "ip", ["tuntap", "add", "dev", tap, "mode", "tap"]);
    await runChecked(runner, "ip", ["link", "set", tap, "up"]);
    const rootDisk = path.join(dir, "root.ext4");
    await runChecked(runner, "cp", ["--reflink=auto", "--sparse=always", shared.rootfs, rootDisk]);
    const workDisk = path.join(dir, "work.ext4");
    await createWorkDisk({
      file: workDisk,
      sizeBytes: 64 * 1024 * 1024,
      authorizedKey:
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFirecrackerBootTestKeyNotUsedAnywhere0 fc",
      runner,
    });
    handles = await driver.start({
      ...spec,
      accel: "kvm",
      kernel: {
        vmlinuz: kernel.vmlinuz,
        vmlinux: kernel.vmlinux,
        initrd: kernel.initrd,
        cmdline: `${DEFAULT_KERNEL_CMDLINE} root=/dev/vda banger.hostname=fc-boot`,
      },
      rootDisk,
      workDisk,
      dir,
      network: { mode: "tap", tap, mac: "52:54:ab:c1:23:01", ip: "172.30.0.2" },
    });
    assert.equal(await driver.status(handles), "running");
    // The kernel ran, banger's initramfs found the root disk and handed over to the image's init.
    const deadline = Date.now() + 120_000;
    let log = "";
    while (!/Welcome to|login:/.test(log)) {
      assert.doesNotMatch(log, /banger-initramfs: error/);
      assert.equal(await driver.status(handles), "running", `firecracker exited; console:\n${log}`);
      assert.ok(Date.now() < deadline, `the guest never reached its init; console:\n${log}`);
      await new Promise((r) => setTimeout(r, 500));
      log = await fs.readFile(handles.consoleLog, "utf8").catch(() => "");
    }
    assert.match(log, /Linux version/);
    await driver.stop(handles, 30_000);
    assert.equal(await driver.status(handles), "stopped");
  } finally {
    if (handles) await driver.kill(handles).catch(() => undefined);
    await runner.run("ip", ["link", "del", tap]).catch(() => undefined);
    await fs.rm(dir, { recursive: true, force: true });
  }
});
