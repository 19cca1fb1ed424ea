import { spawn } from "node:child_process";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";
import type { Driver, DriverFeatures, RootDisk, VmHandles, VmSpec } from "../driver.js";
import { killVmm, vmmStatus, waitForExit } from "../process.js";
import { CONSOLE_LOG_FILE, ConsoleRecorders, DEFAULT_CONSOLE_LOG_BYTES } from "../console-log.js";
import { qcow2RootDisk } from "../root-disk.js";
import { qmpExecute } from "./qmp.js";

const MiB = 1024 * 1024;

/** QEMU's files in the VM's directory: QMP and serial console sockets, and its pid file. */
const QMP_SOCKET = "qmp.sock";
const CONSOLE_SOCKET = "console.sock";
const PID_FILE = "qemu.pid";

/** The qemu-system-x86_64 command line for a microvm machine with virtio-mmio devices. */
export function qemuArgs(spec: VmSpec): string[] {
  const kernel = spec.kernel.vmlinuz ?? spec.kernel.vmlinux;
  if (!kernel)
    throw new BangerError(ErrorCode.InvalidParams, `kernel for ${spec.name} has no image to boot`);
  const args = [
    "-name",
    `banger-${spec.name}`,
    "-M",
    "microvm,acpi=on,x-option-roms=off",
    "-accel",
    spec.accel === "kvm" ? "kvm" : "tcg,thread=multi",
    "-cpu",
    spec.accel === "kvm" ? "host" : "max",
    "-smp",
    String(spec.vcpu),
    "-m",
    `${Math.floor(spec.memoryBytes / MiB)}M`,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    // The console goes to a socket the daemon reads into a bounded log (a file would grow
    // with whatever the guest prints); -S holds the guest until the daemon is reading.
    "-chardev",
    `socket,id=console,path=${path.join(spec.dir, CONSOLE_SOCKET)},server=on,wait=off`,
    "-serial",
    "chardev:console",
    "-S",
    "-kernel",
    kernel,
    ...(spec.kernel.initrd ? ["-initrd", spec.kernel.initrd] : []),
    "-append",
    spec.kernel.cmdline,
    "-drive",
    `id=root,file=${spec.rootDisk},format=qcow2,if=none,cache=unsafe`,
    "-device",
    "virtio-blk-device,drive=root",
    "-drive",
    `id=work,file=${spec.workDisk},format=raw,if=none,cache=unsafe`,
    "-device",
    "virtio-blk-device,drive=work",
    "-object",
    "rng-random,id=rng0,filename=/dev/urandom",
    "-device",
    "virtio-rng-device,rng=rng0",
    "-qmp",
    `unix:${path.join(spec.dir, QMP_SOCKET)},server=on,wait=off`,
    "-pidfile",
    path.join(spec.dir, PID_FILE),
    "-daemonize",
  ];
  if (spec.network.mode === "user") {
    args.push(
      "-netdev",
      spec.network.stream
        ? // passt (behind banger's filter) gives egress and forwards SSH itself.
          `stream,id=net0,server=off,addr.type=unix,addr.path=${spec.network.stream}`
        : // restrict=on: no egress and no host (10.0.2.2 would be the host's 127.0.0.1); SSH still forwards.
          `user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:${spec.network.sshPort}-:22`,
      "-device",
      // The MAC banger's filter announces to passt for the guest (QEMU's default, made explicit).
      "virtio-net-device,netdev=net0,mac=52:54:00:12:34:56",
    );
  } else {
    args.push(
      "-netdev",
      `tap,id=net0,ifname=${spec.network.tap},script=no,downscript=no`,
      "-device",
      `virtio-net-device,netdev=net0,mac=${spec.network.mac}`,
    );
  }
  return args;
}

export const QEMU_FEATURES: DriverFeatures = {
  userNetworking: true,
  needsKvm: false,
  snapshot: false,
  hotplugPorts: false,
};

/** The longest a QMP powerdown request may take (a healthy QEMU answers at once). */
const QMP_POWERDOWN_MS = 5_000;

/** QEMU's microvm machine, controlled over QMP; the process is daemonized so it outlives bangerd. */
export class QemuDriver implements Driver {
  readonly name = "qemu" as const;
  readonly features = QEMU_FEATURES;
  readonly rootDisk: RootDisk;

  constructor(
    private readonly runner: CommandRunner,
    private readonly consoles: ConsoleRecorders = new ConsoleRecorders(),
  ) {
    this.rootDisk = qcow2RootDisk(runner);
  }

  async removeFiles(vmDir: string): Promise<void> {
    await fsp.rm(path.join(vmDir, QMP_SOCKET), { force: true });
  }

  async start(spec: VmSpec): Promise<VmHandles> {
    const binary = await this.runner.which("qemu-system-x86_64");
    if (!binary) {
      throw new BangerError(
        ErrorCode.Precondition,
        "qemu-system-x86_64 is not installed",
        "sudo apt-get install qemu-system-x86 (or run 'banger doctor')",
      );
    }
    const pidFile = path.join(spec.dir, PID_FILE);
    await fsp.rm(pidFile, { force: true });
    await fsp.rm(path.join(spec.dir, QMP_SOCKET), { force: true });
    await fsp.rm(path.join(spec.dir, CONSOLE_SOCKET), { force: true });
    // -daemonize: the parent exits once the VM is set up (errors go to its stderr); the child is re-parented away from us.
    const stderr = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
      const child = spawn(binary, qemuArgs(spec), { stdio: ["ignore", "ignore", "pipe"] });
      let err = "";
      child.stderr.on("data", (c: Buffer) => (err += c.toString()));
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      child.on("error", reject);
      child.on("close", (code) => {
        clearTimeout(timer);
        resolve({ code, stderr: err });
      });
    });
    if (stderr.code !== 0) {
      // QEMU's own reason (a kernel it cannot load, a disk it cannot open) is on its stderr.
      const why = stderr.stderr.trim().split("\n").slice(-3).join(" ");
      throw new BangerError(
        ErrorCode.BootFailed,
        `qemu could not start VM ${spec.name}: ${why || `it exited with status ${stderr.code}`}`,
        `the VM is not running; 'banger vm logs ${spec.name}' shows its console; check its kernel ('banger kernel list'), then 'banger vm start ${spec.name}', or 'banger vm delete ${spec.name}'`,
      );
    }
    const pid = Number.parseInt((await fsp.readFile(pidFile, "utf8")).trim(), 10);
    const handles: VmHandles = {
      vmm: "qemu",
      pid,
      controlSocket: path.join(spec.dir, QMP_SOCKET),
      consoleLog: path.join(spec.dir, CONSOLE_LOG_FILE),
      consoleSocket: path.join(spec.dir, CONSOLE_SOCKET),
      sshHost: spec.network.mode === "user" ? "127.0.0.1" : spec.network.ip,
      sshPort: spec.network.mode === "user" ? spec.network.sshPort : 22,
      tap: spec.network.mode === "tap" ? spec.network.tap : null,
    };
    try {
      await this.adopt(handles, spec.consoleLogBytes ?? DEFAULT_CONSOLE_LOG_BYTES);
    } catch (err) {
      await this.kill(handles);
      this.release(handles);
      throw err;
    }
    return handles;
  }

  async adopt(handles: VmHandles, consoleLogBytes: number): Promise<void> {
    if (handles.consoleSocket)
      await this.consoles.attach(
        handles.controlSocket,
        handles.consoleSocket,
        handles.consoleLog,
        consoleLogBytes,
      );
    // Started with -S (or left paused by a daemon that died before this): run.
    await qmpExecute(handles.controlSocket, "cont");
  }

  release(handles: VmHandles): void {
    this.consoles.detach(handles.controlSocket);
  }

  consoleEnded(handles: VmHandles, timeoutMs: number): Promise<void> {
    return this.consoles.whenEnded(handles.controlSocket, timeoutMs);
  }

  onExit(listener: () => void): () => void {
    return this.consoles.onEnd(() => listener());
  }

  status(handles: VmHandles): Promise<"running" | "stopped"> {
    return vmmStatus(handles, "qemu-system");
  }

  async stop(handles: VmHandles, deadlineMs: number): Promise<void> {
    const end = Date.now() + deadlineMs;
    if ((await this.status(handles)) === "stopped") return;
    // ACPI power button, for guests that handle it (a guest already shutting down ignores it);
    // -no-reboot makes QEMU exit when the guest powers off. A frozen QEMU never answers QMP:
    // the request's own wait comes out of the deadline.
    await qmpExecute(
      handles.controlSocket,
      "system_powerdown",
      undefined,
      Math.min(QMP_POWERDOWN_MS, deadlineMs),
    ).catch(() => {});
    if (await waitForExit(handles.pid, Math.max(0, end - Date.now()))) return;
    await this.kill(handles);
  }

  kill(handles: VmHandles): Promise<void> {
    return killVmm(handles, "qemu-system");
  }

  async describe(): Promise<string> {
    const r = await this.runner.run("qemu-system-x86_64", ["--version"]);
    return r.stdout.split("\n")[0] ?? "qemu";
  }
}
