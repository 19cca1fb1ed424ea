import { spawn } from "node:child_process";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";
import type { Driver, VmHandles, VmSpec } from "../driver.js";
import { killVmm, vmmStatus, waitForExit } from "../process.js";
import { qmpExecute } from "./qmp.js";

const MiB = 1024 * 1024;

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
    "-serial",
    `file:${path.join(spec.dir, "console.log")}`,
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
    `unix:${path.join(spec.dir, "qmp.sock")},server=on,wait=off`,
    "-pidfile",
    path.join(spec.dir, "qemu.pid"),
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

/** QEMU's microvm machine, controlled over QMP; the process is daemonized so it outlives bangerd. */
export class QemuDriver implements Driver {
  readonly name = "qemu" as const;

  constructor(private readonly runner: CommandRunner) {}

  async start(spec: VmSpec): Promise<VmHandles> {
    const binary = await this.runner.which("qemu-system-x86_64");
    if (!binary) {
      throw new BangerError(
        ErrorCode.Precondition,
        "qemu-system-x86_64 is not installed",
        "sudo apt-get install qemu-system-x86 (or run 'banger doctor')",
      );
    }
    const pidFile = path.join(spec.dir, "qemu.pid");
    await fsp.rm(pidFile, { force: true });
    await fsp.rm(path.join(spec.dir, "qmp.sock"), { force: true });
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
      throw new BangerError(
        ErrorCode.Internal,
        `qemu failed to start ${spec.name}: ${stderr.stderr.trim().split("\n").slice(-3).join(" ")}`,
        `see ${path.join(spec.dir, "console.log")}`,
      );
    }
    const pid = Number.parseInt((await fsp.readFile(pidFile, "utf8")).trim(), 10);
    return {
      vmm: "qemu",
      pid,
      controlSocket: path.join(spec.dir, "qmp.sock"),
      consoleLog: path.join(spec.dir, "console.log"),
      sshHost: spec.network.mode === "user" ? "127.0.0.1" : spec.network.ip,
      sshPort: spec.network.mode === "user" ? spec.network.sshPort : 22,
      tap: spec.network.mode === "tap" ? spec.network.tap : null,
    };
  }

  status(handles: VmHandles): Promise<"running" | "stopped"> {
    return vmmStatus(handles, "qemu-system");
  }

  async stop(handles: VmHandles, deadlineMs: number): Promise<void> {
    if ((await this.status(handles)) === "stopped") return;
    // ACPI power button, for guests that handle it (a guest already shutting down ignores it);
    // -no-reboot makes QEMU exit when the guest powers off.
    await qmpExecute(handles.controlSocket, "system_powerdown").catch(() => {});
    if (await waitForExit(handles.pid, deadlineMs)) return;
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
