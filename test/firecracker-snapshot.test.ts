// Firecracker snapshots, restore repair and the vsock identity channel, against a stand-in for
// Firecracker's API and vsock sockets: there is no firecracker binary, nor a KVM it could use,
// on this machine. Every request the driver sends is also checked against Firecracker's own
// API definition (../shared/firecracker-api.yaml).
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { createCommandRunner } from "../src/system/runner.js";
import type { SaveRequest, VmHandles } from "../src/vmm/driver.js";
import type { FirecrackerRequest } from "../src/vmm/firecracker/api.js";
import { checkSnapshotFiles, FirecrackerDriver } from "../src/vmm/firecracker/driver.js";
import { FirecrackerSnapshots } from "../src/vmm/firecracker/snapshot.js";
import { connectVsock } from "../src/vmm/firecracker/vsock.js";
import { copiedRootDisk } from "../src/vmm/root-disk.js";
import { loadApi, requestErrors } from "./helpers/firecracker-api.js";

type Answer = { status: number; body?: string };

interface FakeFirecracker {
  socket: string;
  seen: FirecrackerRequest[];
  close(): Promise<void>;
}

/**
 * An HTTP server on a VM directory's firecracker.sock that records each request. By default it
 * answers 204, GET / with `state`, and a snapshot/create by writing both files fresh (mode
 * 0644, as a process with umask 022 would); `answer` overrides any request.
 */
async function fakeFirecracker(
  vmDir: string,
  opts: { state?: string; answer?: (req: FirecrackerRequest) => Answer | undefined } = {},
): Promise<FakeFirecracker> {
  const socket = path.join(vmDir, "firecracker.sock");
  const seen: FirecrackerRequest[] = [];
  const server = http.createServer((req, res) => {
    let text = "";
    req.on("data", (c: Buffer) => (text += c.toString()));
    req.on("end", () => {
      void (async () => {
        const r: FirecrackerRequest = {
          method: req.method as FirecrackerRequest["method"],
          path: req.url ?? "",
          ...(text ? { body: JSON.parse(text) as Record<string, unknown> } : {}),
        };
        seen.push(r);
        const answer = opts.answer?.(r);
        if (answer) return res.writeHead(answer.status).end(answer.body);
        if (r.method === "GET" && r.path === "/")
          return res.writeHead(200, { "content-type": "application/json" }).end(
            JSON.stringify({
              app_name: "Firecracker",
              id: "x",
              state: opts.state,
              vmm_version: "1",
            }),
          );
        if (r.path === "/snapshot/create") {
          const body = r.body as { mem_file_path: string; snapshot_path: string };
          for (const [file, bytes] of [
            [body.mem_file_path, 64 * 1024],
            [body.snapshot_path, 4096],
          ] as const) {
            await fs.rm(file, { force: true });
            await fs.writeFile(file, Buffer.alloc(bytes, 7), { mode: 0o644 });
          }
        }
        res.writeHead(204).end();
      })();
    });
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    socket,
    seen,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A VM directory with a root and a work disk of distinct contents, and a snapshot directory. */
async function vmWithDisks() {
  const top = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fcsnap-"));
  const vmDir = path.join(top, "vm");
  const snapDir = path.join(top, "snap");
  await fs.mkdir(vmDir);
  await fs.mkdir(snapDir, { mode: 0o700 });
  await fs.writeFile(path.join(vmDir, "root.ext4"), Buffer.alloc(256 * 1024, 1), { mode: 0o600 });
  await fs.writeFile(path.join(vmDir, "work.ext4"), Buffer.alloc(128 * 1024, 2), { mode: 0o600 });
  return { top, vmDir, snapDir, remove: () => fs.rm(top, { recursive: true, force: true }) };
}

/** The save request into the VM's snapshot directory (Firecracker's raw root needs no image). */
function saveInto(vm: { vmDir: string; snapDir: string }, opts: { resume: boolean }): SaveRequest {
  return {
    dir: vm.snapDir,
    vmDir: vm.vmDir,
    imageRootfs: "/unused/rootfs.ext4",
    workDisk: { file: path.join(vm.vmDir, "work.ext4"), format: "raw" },
    resume: opts.resume,
    deadlineMs: 30_000,
  };
}

function handlesFor(socket: string): VmHandles {
  return {
    vmm: "firecracker",
    pid: 2 ** 22 + 1, // no such process: nothing here may be killed for real
    controlSocket: socket,
    consoleLog: "/nonexistent/console.log",
    sshHost: "172.30.0.2",
    sshPort: 22,
    tap: "bg-test",
  };
}

function snapshotsWith(killed: VmHandles[]) {
  const runner = createCommandRunner();
  return new FirecrackerSnapshots({
    runner,
    rootDisk: copiedRootDisk(runner),
    describe: () => Promise.resolve("Firecracker v1.17.0"),
    kill: (h) => {
      killed.push(h);
      return Promise.resolve();
    },
  });
}

const calls = (seen: FirecrackerRequest[]) =>
  seen.map((r) => `${r.method} ${r.path} ${r.body ? JSON.stringify(r.body) : ""}`.trim());

test("a snapshot pauses, copies both disks, saves with the drives on the copies, then runs the VM on its own disks again", async () => {
  const api = await loadApi();
  const vm = await vmWithDisks();
  const fc = await fakeFirecracker(vm.vmDir);
  try {
    const killed: VmHandles[] = [];
    const saved = await snapshotsWith(killed).save(
      handlesFor(fc.socket),
      saveInto(vm, { resume: true }),
    );
    const snap = (f: string) => path.join(vm.snapDir, f);
    const own = (f: string) => path.join(vm.vmDir, f);
    assert.deepEqual(calls(fc.seen), [
      'PATCH /vm {"state":"Paused"}',
      // What the device state records, so a restore opens the snapshot's files, not this VM's.
      `PATCH /drives/root {"drive_id":"root","path_on_host":"${snap("root.disk")}"}`,
      `PATCH /drives/work {"drive_id":"work","path_on_host":"${snap("work.disk")}"}`,
      `PUT /snapshot/create {"snapshot_type":"Full","snapshot_path":"${snap("vmstate")}","mem_file_path":"${snap("memory")}"}`,
      `PATCH /drives/root {"drive_id":"root","path_on_host":"${own("root.ext4")}"}`,
      `PATCH /drives/work {"drive_id":"work","path_on_host":"${own("work.ext4")}"}`,
      'PATCH /vm {"state":"Resumed"}',
    ]);
    for (const r of fc.seen) assert.deepEqual(requestErrors(api, r), []);
    assert.deepEqual(killed, []);
    assert.deepEqual((await fs.readdir(vm.snapDir)).sort(), [
      "memory",
      "root.disk",
      "vmstate",
      "work.disk",
    ]);
    // Guest memory and disks are the user's alone, whatever mode Firecracker gave its files.
    for (const f of await fs.readdir(vm.snapDir))
      assert.equal((await fs.stat(snap(f))).mode & 0o777, 0o600, f);
    assert.deepEqual(await fs.readFile(snap("root.disk")), await fs.readFile(own("root.ext4")));
    assert.deepEqual(await fs.readFile(snap("work.disk")), await fs.readFile(own("work.ext4")));
    assert.equal(saved.vmmVersion, "Firecracker v1.17.0");
    assert.ok(saved.bytes >= (256 + 128 + 64) * 1024, `${saved.bytes} bytes counted`);
    assert.ok(saved.pausedMs >= 0);
  } finally {
    await fc.close();
    await vm.remove();
  }
});

test("a snapshot with resume false stops the VMM instead of running the guest again", async () => {
  const vm = await vmWithDisks();
  const fc = await fakeFirecracker(vm.vmDir);
  try {
    const killed: VmHandles[] = [];
    const handles = handlesFor(fc.socket);
    await snapshotsWith(killed).save(handles, saveInto(vm, { resume: false }));
    assert.deepEqual(killed, [handles]);
    assert.ok(!calls(fc.seen).includes('PATCH /vm {"state":"Resumed"}'));
  } finally {
    await fc.close();
    await vm.remove();
  }
});

test("a refused snapshot/create puts the drives back and runs the VM again, with Firecracker's reason", async () => {
  const vm = await vmWithDisks();
  const fc = await fakeFirecracker(vm.vmDir, {
    answer: (r) =>
      r.path === "/snapshot/create"
        ? { status: 400, body: '{"fault_message":"No space left on device"}' }
        : undefined,
  });
  try {
    const killed: VmHandles[] = [];
    await assert.rejects(
      snapshotsWith(killed).save(handlesFor(fc.socket), saveInto(vm, { resume: true })),
      /refused PUT \/snapshot\/create \(HTTP 400\).*No space left on device/,
    );
    assert.deepEqual(
      fc.seen.map((r) => `${r.method} ${r.path}`),
      [
        "PATCH /vm",
        "PATCH /drives/root",
        "PATCH /drives/work",
        "PUT /snapshot/create",
        "PATCH /drives/root",
        "PATCH /drives/work",
        "PATCH /vm",
      ],
    );
    assert.equal(fc.seen.at(-2)!.body!.path_on_host, path.join(vm.vmDir, "work.ext4"));
    assert.deepEqual(fc.seen.at(-1)!.body, { state: "Resumed" });
    assert.deepEqual(killed, []);
  } finally {
    await fc.close();
    await vm.remove();
  }
});

test("a qcow2 work disk (a QEMU clone's) is refused before the VM is paused", async () => {
  const vm = await vmWithDisks();
  const fc = await fakeFirecracker(vm.vmDir);
  try {
    const req = saveInto(vm, { resume: true });
    await assert.rejects(
      snapshotsWith([]).save(handlesFor(fc.socket), {
        ...req,
        workDisk: { file: path.join(vm.vmDir, "work.qcow2"), format: "qcow2" },
      }),
      /raw work disks, not qcow2/,
    );
    assert.deepEqual(fc.seen, []);
  } finally {
    await fc.close();
    await vm.remove();
  }
});

test("a disk that cannot be copied runs the VM again without touching its drives", async () => {
  const vm = await vmWithDisks();
  await fs.rm(path.join(vm.vmDir, "work.ext4"));
  const fc = await fakeFirecracker(vm.vmDir);
  try {
    await assert.rejects(
      snapshotsWith([]).save(handlesFor(fc.socket), saveInto(vm, { resume: true })),
      /cp exited/,
    );
    assert.deepEqual(calls(fc.seen), [
      'PATCH /vm {"state":"Paused"}',
      'PATCH /vm {"state":"Resumed"}',
    ]);
  } finally {
    await fc.close();
    await vm.remove();
  }
});

test("drives that cannot be put back on the VM's own disks stop it rather than let it write into the snapshot", async () => {
  const vm = await vmWithDisks();
  let patches = 0;
  const fc = await fakeFirecracker(vm.vmDir, {
    // The first two PATCHes move the drives to the snapshot; the third (back) is refused.
    answer: (r) =>
      r.path.startsWith("/drives/") && ++patches === 3
        ? { status: 400, body: '{"fault_message":"Cannot open block device"}' }
        : undefined,
  });
  try {
    const killed: VmHandles[] = [];
    const handles = handlesFor(fc.socket);
    await assert.rejects(
      snapshotsWith(killed).save(handles, saveInto(vm, { resume: true })),
      /the VM was stopped: .*Cannot open block device/,
    );
    assert.deepEqual(killed, [handles]);
    assert.ok(!calls(fc.seen).includes('PATCH /vm {"state":"Resumed"}'));
  } finally {
    await fc.close();
    await vm.remove();
  }
});

test("a clone's disks are its own raw copies of the snapshot's; a missing one leaves nothing behind", async () => {
  const vm = await vmWithDisks();
  const clone = path.join(vm.top, "clone");
  await fs.mkdir(clone);
  try {
    await fs.writeFile(path.join(vm.snapDir, "root.disk"), Buffer.alloc(64 * 1024, 3), {
      mode: 0o600,
    });
    const snapshots = snapshotsWith([]);
    await assert.rejects(snapshots.cloneDisks(vm.snapDir, clone), /cp exited/);
    assert.deepEqual(await fs.readdir(clone), []);

    await fs.writeFile(path.join(vm.snapDir, "work.disk"), Buffer.alloc(32 * 1024, 4), {
      mode: 0o644,
    });
    assert.equal(await snapshots.cloneDisks(vm.snapDir, clone), "raw");
    assert.deepEqual(
      await fs.readFile(path.join(clone, "root.ext4")),
      await fs.readFile(path.join(vm.snapDir, "root.disk")),
    );
    assert.deepEqual(
      await fs.readFile(path.join(clone, "work.ext4")),
      await fs.readFile(path.join(vm.snapDir, "work.disk")),
    );
    for (const f of ["root.ext4", "work.ext4"])
      assert.equal((await fs.stat(path.join(clone, f))).mode & 0o777, 0o600, f);
  } finally {
    await vm.remove();
  }
});

test("adopting a VM a dead daemon left paused puts its drives back on its own disks, then runs it", async () => {
  const api = await loadApi();
  const vm = await vmWithDisks();
  const driver = new FirecrackerDriver(createCommandRunner());
  for (const state of ["Paused", "Running"]) {
    const fc = await fakeFirecracker(vm.vmDir, { state });
    try {
      await driver.adopt(handlesFor(fc.socket));
      for (const r of fc.seen) assert.deepEqual(requestErrors(api, r), []);
      assert.deepEqual(
        calls(fc.seen),
        state === "Paused"
          ? [
              "GET /",
              `PATCH /drives/root {"drive_id":"root","path_on_host":"${path.join(vm.vmDir, "root.ext4")}"}`,
              `PATCH /drives/work {"drive_id":"work","path_on_host":"${path.join(vm.vmDir, "work.ext4")}"}`,
              'PATCH /vm {"state":"Resumed"}',
            ]
          : ["GET /"],
        state,
      );
    } finally {
      await fc.close();
    }
  }
  await vm.remove();
});

test("the driver's snapshots stay switched off until a guest reader listens on the identity port", () => {
  const driver = new FirecrackerDriver(createCommandRunner());
  assert.ok(driver.snapshots, "built");
  // A clone nobody can tell its identity would share the saved VM's host keys and entropy.
  assert.equal(driver.features.snapshot, false);
});

test("a restore whose snapshot lacks a file fails as a boot failure naming it", async () => {
  const vm = await vmWithDisks();
  try {
    const memory = path.join(vm.snapDir, "memory");
    await fs.writeFile(memory, "m", { mode: 0o600 });
    await assert.rejects(checkSnapshotFiles(memory), (err: Error & { code?: number }) => {
      assert.match(err.message, /snapshot's vmstate file is missing/);
      assert.equal(err.code, -32009); // BootFailed: the caller falls back to a cold boot
      return true;
    });
    await fs.writeFile(path.join(vm.snapDir, "vmstate"), "s", { mode: 0o600 });
    await checkSnapshotFiles(memory);
  } finally {
    await vm.remove();
  }
});

/**
 * A stand-in for Firecracker's vsock unix socket: answers `CONNECT <port>` with `OK <n>` once
 * a guest listens (after `refusals` connections it closes at once), then hands the stream to
 * `guest`. `reply` replaces the OK line.
 */
async function fakeVsock(
  dir: string,
  opts: { refusals?: number; reply?: string; guest?: (s: net.Socket) => void },
) {
  const uds = path.join(dir, "vsock.sock");
  const connects: string[] = [];
  let refusals = opts.refusals ?? 0;
  const server = net.createServer((s) => {
    s.on("error", () => {});
    let line = "";
    const onData = (c: Buffer) => {
      line += c.toString("latin1");
      const end = line.indexOf("\n");
      if (end < 0) return;
      s.off("data", onData);
      connects.push(line.slice(0, end));
      if (refusals-- > 0) return void s.destroy();
      const rest = line.slice(end + 1);
      s.write(opts.reply ?? "OK 1073741824\n");
      if (rest) s.unshift(Buffer.from(rest, "latin1"));
      opts.guest?.(s);
    };
    s.on("data", onData);
  });
  await new Promise<void>((resolve) => server.listen(uds, resolve));
  return { uds, connects, close: () => new Promise<void>((r) => server.close(() => r())) };
}

test("the identity channel reaches the guest's vsock port through Firecracker's CONNECT handshake", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fcvsock-"));
  // The guest answers the one line it reads, and its answer may share a chunk with the OK line.
  const vsock = await fakeVsock(dir, {
    refusals: 2,
    reply: "OK 1073741824\nhello from the guest\n",
    guest: (s) => {
      let got = "";
      s.on("data", (c: Buffer) => {
        got += c.toString();
        if (got.endsWith("\n")) s.end(`ok ${got.trim().length}\n`);
      });
    },
  });
  try {
    const driver = new FirecrackerDriver(createCommandRunner());
    const socket = await driver.identityChannel(
      { ...handlesFor(path.join(dir, "firecracker.sock")), identitySocket: vsock.uds },
      10_000,
    );
    const answer = await new Promise<string>((resolve, reject) => {
      let text = "";
      socket.on("data", (c: Buffer) => (text += c.toString()));
      socket.on("end", () => resolve(text));
      socket.on("error", reject);
      socket.write("banger-identity v1 hostname=a\n");
    });
    assert.equal(answer, "hello from the guest\nok 29\n");
    // Two tries found no guest listening (Firecracker closes at once then); the third got in.
    assert.deepEqual(vsock.connects, ["CONNECT 520", "CONNECT 520", "CONNECT 520"]);
    socket.destroy();
  } finally {
    await vsock.close();
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test("the vsock handshake refuses what is not Firecracker's answer, and gives up at its deadline", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fcvsock-"));
  try {
    const bad = await fakeVsock(dir, { reply: "HTTP/1.1 200 OK\n" });
    await assert.rejects(
      connectVsock(bad.uds, 520, 5_000),
      /answered "HTTP\/1.1 200 OK" to CONNECT 520/,
    );
    await bad.close();

    const endless = await fakeVsock(dir, { reply: "OK ".padEnd(200, "1") });
    await assert.rejects(connectVsock(endless.uds, 520, 5_000), /past 64 bytes without a line/);
    await endless.close();

    const never = await fakeVsock(dir, { refusals: Number.POSITIVE_INFINITY });
    await assert.rejects(
      connectVsock(never.uds, 520, 500),
      /nothing in the guest accepted vsock port 520 within 1 s \(firecracker closed the connection\)/,
    );
    assert.ok(never.connects.length >= 2, `${never.connects.length} tries`);
    await never.close();

    // No Firecracker at all: its socket is not there.
    await assert.rejects(connectVsock(path.join(dir, "none.sock"), 520, 300), /ENOENT/);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
