import { spawn } from "node:child_process";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";
import type {
  Driver,
  DriverFeatures,
  RootDisk,
  SnapshotSupport,
  VmHandles,
  VmSpec,
} from "../driver.js";
import { shellQuote } from "../../guest/ssh.js";
import { killVmm, vmmStatus, waitForExit } from "../process.js";
import { CONSOLE_LOG_FILE, ConsoleRecorders, DEFAULT_CONSOLE_LOG_BYTES } from "../console-log.js";
import { qcow2RootDisk } from "../root-disk.js";
import { qmpExecute } from "./qmp.js";
import { qemuSnapshots } from "./snapshot.js";

const MiB = 1024 * 1024;

/** QEMU's files in the VM's directory: QMP and serial console sockets, and its pid file. */
const QMP_SOCKET = "qmp.sock";
const CONSOLE_SOCKET = "console.sock";
const PID_FILE = "qemu.pid";
/** The identity channel's socket (a virtio-serial port named banger.identity in the guest). */
const IDENTITY_SOCKET = "identity.sock";
/** The port's name in the guest (/sys/class/virtio-ports/<port>/name). */
export const IDENTITY_PORT_NAME = "banger.identity";

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
    `id=work,file=${spec.workDisk},format=${spec.workDiskFormat ?? "raw"},if=none,cache=unsafe`,
    "-device",
    "virtio-blk-device,drive=work",
    "-object",
    "rng-random,id=rng0,filename=/dev/urandom",
    "-device",
    "virtio-rng-device,rng=rng0",
    // Every VM has the identity port, so any of them can be snapshotted and its clones told who
    // they are (the device set of a restore must be the saved one's, in the same order).
    "-device",
    "virtio-serial-device",
    "-chardev",
    `socket,id=identity,path=${path.join(spec.dir, IDENTITY_SOCKET)},server=on,wait=off`,
    "-device",
    `virtserialport,chardev=identity,name=${IDENTITY_PORT_NAME}`,
    "-qmp",
    `unix:${path.join(spec.dir, QMP_SOCKET)},server=on,wait=off`,
    "-pidfile",
    path.join(spec.dir, PID_FILE),
    "-daemonize",
    // The saved memory and device state; the path is banger's own, quoted for exec's sh -c.
    ...(spec.restore ? ["-incoming", `exec:cat ${shellQuote(spec.restore.memory)}`] : []),
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
  snapshot: true,
  hotplugPorts: false,
};

/** The longest a restore may take to load its saved state before the VM is given up. */
const RESTORE_LOAD_MS = 120_000;

/** What a stray VMM's handles need beyond its pid and socket (nothing of it is read). */
const NO_HANDLES = { consoleLog: "", sshHost: "", sshPort: 0, tap: null };

/** The longest a QMP powerdown request may take (a healthy QEMU answers at once). */
const QMP_POWERDOWN_MS = 5_000;

/** QEMU's microvm machine, controlled over QMP; the process is daemonized so it outlives bangerd. */
export class QemuDriver implements Driver {
  readonly name = "qemu" as const;
  readonly features = QEMU_FEATURES;
  readonly rootDisk: RootDisk;
  readonly snapshots: SnapshotSupport;

  constructor(
    private readonly runner: CommandRunner,
    private readonly consoles: ConsoleRecorders = new ConsoleRecorders(),
  ) {
    this.rootDisk = qcow2RootDisk(runner);
    this.snapshots = qemuSnapshots({
      runner,
      rootDisk: this.rootDisk,
      describe: () => this.describe(),
    });
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
    await fsp.rm(path.join(spec.dir, IDENTITY_SOCKET), { force: true });
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
      identitySocket: path.join(spec.dir, IDENTITY_SOCKET),
    };
    try {
      if (spec.restore) await this.loaded(handles, spec.name);
      await this.adopt(handles, spec.consoleLogBytes ?? DEFAULT_CONSOLE_LOG_BYTES);
    } catch (err) {
      await this.kill(handles);
      this.release(handles);
      throw err;
    }
    return handles;
  }

  /**
   * Waits until an incoming QEMU has loaded its saved state (it stays paused under -S); one that
   * cannot (a damaged or mismatched snapshot) exits, which is a boot failure.
   */
  private async loaded(handles: VmHandles, name: string): Promise<void> {
    const end = Date.now() + RESTORE_LOAD_MS;
    for (;;) {
      const status = await qmpExecute(handles.controlSocket, "query-status").then(
        (r) => String(r.status ?? ""),
        () => null,
      );
      if (status !== null && status !== "inmigrate") return;
      if (status === null && (await this.status(handles)) === "stopped") {
        throw new BangerError(
          ErrorCode.BootFailed,
          `qemu could not restore VM ${name}: it exited while loading the saved state (a damaged snapshot, or one another QEMU made)`,
          "banger boots it cold instead; 'banger snapshot delete <snapshot>' drops a damaged one",
        );
      }
      if (Date.now() > end) {
        throw new BangerError(
          ErrorCode.BootFailed,
          `qemu could not restore VM ${name}: loading the saved state took over ${RESTORE_LOAD_MS / 1000} s`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
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

  async killStray(vmDir: string): Promise<boolean> {
    const text = await fsp.readFile(path.join(vmDir, PID_FILE), "utf8").catch(() => null);
    const pid = text === null ? NaN : Number.parseInt(text.trim(), 10);
    if (!Number.isInteger(pid) || pid <= 0) return false;
    // Only the QEMU of this VM's directory (its QMP socket on its command line), never a reused pid.
    const stray = { vmm: "qemu", pid, controlSocket: path.join(vmDir, QMP_SOCKET) } as const;
    const ours = (await vmmStatus({ ...stray, ...NO_HANDLES }, "qemu-system")) === "running";
    if (ours) await this.kill({ ...stray, ...NO_HANDLES });
    await fsp.rm(path.join(vmDir, PID_FILE), { force: true });
    await this.removeFiles(vmDir);
    return ours;
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
