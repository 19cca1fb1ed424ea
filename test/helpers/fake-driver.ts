import type { CommandRunner } from "../../src/system/runner.js";
import type { Driver, VmHandles } from "../../src/vmm/driver.js";
import { QemuDriver } from "../../src/vmm/qemu/driver.js";

/**
 * The real QEMU driver's features, root disk and file clean-up, for fake drivers that
 * script only the VMM process (start/stop/kill/status).
 */
export function qemuDiskAndFiles(
  runner: CommandRunner,
): Pick<Driver, "features" | "rootDisk" | "removeFiles"> {
  const qemu = new QemuDriver(runner);
  return {
    features: qemu.features,
    rootDisk: qemu.rootDisk,
    removeFiles: (dir) => qemu.removeFiles(dir),
  };
}

/** Handles of a VM "running" under fakeDriver: no real process or socket behind them. */
export const fakeHandles: VmHandles = {
  vmm: "qemu",
  pid: 1,
  controlSocket: "/nonexistent/qmp.sock",
  consoleLog: "/nonexistent/console.log",
  sshHost: "127.0.0.1",
  sshPort: 1,
  tap: null,
};

/** A VMM that is alive until stopped or killed, starting with fakeHandles. */
export function fakeDriver(runner: CommandRunner): Driver & { alive: boolean } {
  const d = {
    name: "qemu" as const,
    ...qemuDiskAndFiles(runner),
    alive: true,
    start: async () => fakeHandles,
    stop: async () => {
      d.alive = false;
    },
    kill: async () => {
      d.alive = false;
    },
    status: async () => (d.alive ? ("running" as const) : ("stopped" as const)),
    describe: async () => "fake",
  };
  return d;
}
