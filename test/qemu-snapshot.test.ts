import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { createCommandRunner } from "../src/system/runner.js";
import { QemuDriver } from "../src/vmm/qemu/driver.js";
import type { VmHandles } from "../src/vmm/driver.js";

/** Stands in for QEMU's QMP socket: greets, records each command, answers as `reply` says. */
async function fakeQmp(
  socketPath: string,
  reply: (command: string) => Record<string, unknown>,
): Promise<{ commands: string[]; close: () => void }> {
  const commands: string[] = [];
  const server = net.createServer((socket) => {
    socket.write(`${JSON.stringify({ QMP: { version: {} } })}\n`);
    let buffer = "";
    socket.on("data", (chunk) => {
      buffer += chunk.toString();
      let nl: number;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const msg = JSON.parse(buffer.slice(0, nl)) as { execute: string };
        buffer = buffer.slice(nl + 1);
        if (msg.execute !== "qmp_capabilities") commands.push(msg.execute);
        socket.write(
          `${JSON.stringify(msg.execute === "qmp_capabilities" ? { return: {} } : reply(msg.execute))}\n`,
        );
      }
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
  return { commands, close: () => server.close() };
}

for (const resume of [true, false]) {
  test(`a save that fails leaves the VM running (resume: ${resume}): QEMU is told to cont`, async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-test-qsave-"));
    const qmp = await fakeQmp(path.join(dir, "qmp.sock"), (command) =>
      command === "migrate" ? { error: { desc: "No space left on device" } } : { return: {} },
    );
    try {
      const driver = new QemuDriver(createCommandRunner());
      const handles: VmHandles = {
        vmm: "qemu",
        pid: process.pid,
        controlSocket: path.join(dir, "qmp.sock"),
        consoleLog: path.join(dir, "console.log"),
        sshHost: "127.0.0.1",
        sshPort: 1,
        tap: null,
        identitySocket: path.join(dir, "identity.sock"),
      };
      await fs.mkdir(path.join(dir, "snap"));
      await assert.rejects(
        driver.snapshots.save(handles, {
          dir: path.join(dir, "snap"),
          vmDir: dir,
          imageRootfs: "/nonexistent",
          workDisk: { file: path.join(dir, "work.ext4"), format: "raw" },
          resume,
          deadlineMs: 10_000,
        }),
        /No space left on device/,
      );
      assert.deepEqual(qmp.commands, ["stop", "migrate", "migrate_cancel", "cont"]);
    } finally {
      qmp.close();
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
}

test("a VM booted before the identity port cannot be saved: it is told to restart first", async () => {
  const driver = new QemuDriver(createCommandRunner());
  await assert.rejects(
    driver.snapshots.save(
      {
        vmm: "qemu",
        pid: process.pid,
        controlSocket: "/nonexistent/qmp.sock",
        consoleLog: "",
        sshHost: "",
        sshPort: 0,
        tap: null,
      },
      {
        dir: "/nonexistent",
        vmDir: "/nonexistent",
        imageRootfs: "/nonexistent",
        workDisk: { file: "/nonexistent", format: "raw" },
        resume: true,
        deadlineMs: 1_000,
      },
    ),
    /booted before banger could snapshot it/,
  );
});
