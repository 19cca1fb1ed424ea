import assert from "node:assert/strict";
import { test } from "node:test";
import { KeyedLock } from "../src/util/keyed-lock.js";
import { VM_NAME } from "../src/api/vm-names.js";
import { parseSsListening } from "../src/guest/probe.js";
import { shellQuote } from "../src/guest/ssh.js";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createCommandRunner } from "../src/system/runner.js";
import { QemuDriver, qemuArgs } from "../src/vmm/qemu/driver.js";
import type { VmSpec } from "../src/vmm/driver.js";
import { selectVmm } from "../src/vmm/select.js";

test("per-key locks serialise one key and let others run in parallel", async () => {
  const lock = new KeyedLock();
  const events: string[] = [];
  const slow = (key: string, label: string, ms: number) =>
    lock.run(key, async () => {
      events.push(`${label}:start`);
      await new Promise((r) => setTimeout(r, ms));
      events.push(`${label}:end`);
    });
  await Promise.all([slow("a", "a1", 50), slow("a", "a2", 10), slow("b", "b1", 10)]);
  assert.ok(events.indexOf("a1:end") < events.indexOf("a2:start"), events.join(","));
  assert.ok(events.indexOf("b1:end") < events.indexOf("a1:end"), "b did not wait for a");
  await assert.rejects(
    lock.run("a", async () => Promise.reject(new Error("boom"))),
    /boom/,
  );
  assert.equal(await lock.run("a", async () => 42), 42, "a failure does not poison the key");
});

test("VM names are DNS labels", () => {
  for (const ok of ["dev", "a", "brisk-otter", "vm1", "a".repeat(63)])
    assert.ok(VM_NAME.test(ok), ok);
  for (const bad of ["", "-a", "a-", "A", "a_b", "a.b", "a".repeat(64)])
    assert.ok(!VM_NAME.test(bad), bad);
});

test("remote commands survive the remote shell", () => {
  assert.equal(["sh", "-c", "exit 7"].map(shellQuote).join(" "), "sh -c 'exit 7'");
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  assert.equal(shellQuote("/usr/bin/env"), "/usr/bin/env");
});

test("ss output parses into listening sockets", () => {
  const text = [
    'tcp   LISTEN 0      128          0.0.0.0:22        0.0.0.0:*    users:(("sshd",pid=310,fd=3))',
    'tcp   LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=310,fd=4))',
    "udp   UNCONN 0      0      127.0.0.53%lo:53        0.0.0.0:*",
  ].join("\n");
  assert.deepEqual(parseSsListening(text), [
    { proto: "tcp", address: "0.0.0.0", port: 22, process: "sshd" },
    { proto: "tcp", address: "[::]", port: 22, process: "sshd" },
    { proto: "udp", address: "127.0.0.53", port: 53, process: null },
  ]);
});

test("the QEMU command line: microvm, virtio-mmio disks, QMP, daemonized, TCG or KVM", () => {
  const spec: VmSpec = {
    id: "abc",
    name: "dev",
    vcpu: 2,
    memoryBytes: 2 * 1024 ** 3,
    accel: "tcg",
    kernel: {
      vmlinuz: "/k/vmlinuz",
      vmlinux: "/k/vmlinux",
      initrd: "/k/initrd.img",
      cmdline: "console=ttyS0 root=/dev/vda",
    },
    rootDisk: "/v/root.qcow2",
    workDisk: "/v/work.ext4",
    dir: "/v",
    network: { mode: "user", sshPort: 2222 },
  };
  const args = qemuArgs(spec).join(" ");
  assert.match(args, /-M microvm,acpi=on/);
  assert.match(args, /-accel tcg,thread=multi/);
  assert.match(args, /-m 2048M/);
  assert.match(args, /-kernel \/k\/vmlinuz -initrd \/k\/initrd\.img/);
  assert.match(args, /file=\/v\/root\.qcow2,format=qcow2/);
  assert.match(args, /virtio-blk-device,drive=work/);
  assert.match(args, /-qmp unix:\/v\/qmp\.sock,server=on,wait=off/);
  assert.match(args, /-daemonize/);
  // The console: a socket the daemon reads into a bounded log, the guest held (-S) until it does.
  assert.match(args, /-chardev socket,id=console,path=\/v\/console\.sock,server=on,wait=off/);
  assert.match(args, /-serial chardev:console/);
  assert.match(args, / -S /);
  assert.ok(!args.includes("file:"), "no console file QEMU would grow without bound");
  assert.match(args, /-netdev user,id=net0,restrict=on,hostfwd=tcp:127\.0\.0\.1:2222-:22/);
  // Every VM has the identity port (a restore needs the saved device set); a boot loads no state.
  assert.match(
    args,
    /-device virtio-serial-device -chardev socket,id=identity,path=\/v\/identity\.sock,server=on,wait=off -device virtserialport,chardev=identity,name=banger\.identity/,
  );
  assert.ok(!args.includes("-incoming"));
  assert.match(args, /id=work,file=\/v\/work\.ext4,format=raw/);
  // A clone's restore: its qcow2 work overlay, and the saved state from a path quoted for sh -c.
  const restored = qemuArgs({
    ...spec,
    workDisk: "/v/work.qcow2",
    workDiskFormat: "qcow2",
    restore: { memory: "/s/it's here/memory" },
  });
  assert.match(restored.join(" "), /id=work,file=\/v\/work\.qcow2,format=qcow2/);
  assert.equal(restored[restored.indexOf("-incoming") + 1], `exec:cat '/s/it'\\''s here/memory'`);
  // With --nat: passt behind banger's filter, reached over a stream socket; no slirp at all.
  const nat = qemuArgs({
    ...spec,
    network: { mode: "user", sshPort: 2222, stream: "/v/net.sock" },
  });
  assert.match(
    nat.join(" "),
    /-netdev stream,id=net0,server=off,addr\.type=unix,addr\.path=\/v\/net\.sock/,
  );
  assert.ok(!nat.some((a) => a.startsWith("user,")), "no slirp");
  assert.match(qemuArgs({ ...spec, accel: "kvm" }).join(" "), /-accel kvm -cpu host/);
});

test("vmm = auto picks Firecracker only with its binary, KVM and a bridge", () => {
  assert.equal(selectVmm("auto", "kvm", true, true), "firecracker");
  assert.equal(selectVmm("auto", "tcg", true, true), "qemu");
  assert.equal(selectVmm("auto", "kvm", false, true), "qemu");
  assert.equal(selectVmm("auto", "kvm", true, false), "qemu");
  assert.equal(selectVmm("qemu", "kvm", true, true), "qemu");
  assert.throws(() => selectVmm("firecracker", "tcg", true, true), /needs KVM/);
  assert.throws(() => selectVmm("firecracker", "kvm", false, true), /no firecracker binary/);
});

test("a QEMU no handles recorded (its daemon killed while it loaded) is found by its pid file and killed; nothing else is", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-test-stray-"));
  const driver = new QemuDriver(createCommandRunner());
  // Stands in for the QEMU of this VM dir: its command line names the dir's QMP socket.
  const fake = spawn(
    "bash",
    ["-c", `exec -a "qemu-system-x86_64 -qmp unix:${dir}/qmp.sock" sleep 300`],
    { stdio: "ignore" },
  );
  const gone = new Promise((r) => fake.once("exit", r));
  try {
    assert.equal(await driver.killStray(dir), false, "no pid file: nothing to kill");
    // A pid that is alive but not this VM's QEMU (this test process) is left alone.
    await fs.writeFile(path.join(dir, "qemu.pid"), `${process.pid}\n`);
    assert.equal(await driver.killStray(dir), false);
    for (let i = 0; i < 100; i++) {
      const cmd = await fs.readFile(`/proc/${fake.pid}/cmdline`, "utf8").catch(() => "");
      if (cmd.includes("qemu-system")) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    await fs.writeFile(path.join(dir, "qemu.pid"), `${fake.pid}\n`);
    assert.equal(await driver.killStray(dir), true);
    await gone;
    assert.equal(fake.exitCode ?? fake.signalCode, "SIGKILL");
    await assert.rejects(fs.stat(path.join(dir, "qemu.pid")), /ENOENT/, "its pid file goes too");
  } finally {
    fake.kill("SIGKILL");
    await fs.rm(dir, { recursive: true, force: true });
  }
});
