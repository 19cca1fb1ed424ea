import { spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";
import type { Driver, DriverFeatures, RootDisk, VmHandles, VmSpec } from "../driver.js";
import { isPidAlive, killVmm, vmmStatus, waitForExit } from "../process.js";
import { CONSOLE_LOG_FILE } from "../console-log.js";
import { copiedRootDisk } from "../root-disk.js";

export interface FirecrackerRequest {
  method: "PUT" | "PATCH" | "GET";
  path: string;
  body?: Record<string, unknown>;
}

const MiB = 1024 * 1024;

/** Firecracker's API socket in the VM's directory. */
const API_SOCKET = "firecracker.sock";

/**
 * The REST calls that configure and boot one VM, in order. Pure, so tests can
 * check every body against Firecracker's own API definition.
 */
export function firecrackerRequests(spec: VmSpec): FirecrackerRequest[] {
  if (!spec.kernel.vmlinux) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `Firecracker needs an uncompressed vmlinux; kernel for ${spec.name} has none`,
      "pull a kernel that has one ('banger kernel pull debian-cloud' derives it)",
    );
  }
  if (spec.network.mode !== "tap") {
    throw new BangerError(
      ErrorCode.Precondition,
      "Firecracker has no user-mode networking",
      'run bangerd as root for bridge networking, or set vmm = "qemu"',
    );
  }
  return [
    {
      method: "PUT",
      path: "/logger",
      body: {
        log_path: path.join(spec.dir, "firecracker.log"),
        level: "Warning",
        show_level: true,
        show_log_origin: false,
      },
    },
    {
      method: "PUT",
      path: "/machine-config",
      body: { vcpu_count: spec.vcpu, mem_size_mib: Math.floor(spec.memoryBytes / MiB), smt: false },
    },
    {
      method: "PUT",
      path: "/boot-source",
      body: {
        kernel_image_path: spec.kernel.vmlinux,
        boot_args: spec.kernel.cmdline,
        ...(spec.kernel.initrd ? { initrd_path: spec.kernel.initrd } : {}),
      },
    },
    {
      method: "PUT",
      path: "/drives/root",
      body: {
        drive_id: "root",
        path_on_host: spec.rootDisk,
        is_root_device: false,
        is_read_only: false,
      },
    },
    {
      method: "PUT",
      path: "/drives/work",
      body: {
        drive_id: "work",
        path_on_host: spec.workDisk,
        is_root_device: false,
        is_read_only: false,
      },
    },
    {
      method: "PUT",
      path: "/network-interfaces/eth0",
      body: { iface_id: "eth0", host_dev_name: spec.network.tap, guest_mac: spec.network.mac },
    },
    { method: "PUT", path: "/actions", body: { action_type: "InstanceStart" } },
  ];
}

/** One HTTP request over Firecracker's API socket. */
export function apiRequest(
  socketPath: string,
  req: FirecrackerRequest,
  timeoutMs = 10_000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const payload = req.body ? JSON.stringify(req.body) : undefined;
    const r = http.request(
      {
        socketPath,
        // A connection per call: Node's pooled keep-alive one would outlive a Firecracker that
        // exited, and reach the next one on the same socket path as a dead connection (EPIPE).
        agent: false,
        method: req.method,
        path: req.path,
        headers: {
          accept: "application/json",
          ...(payload
            ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
            : {}),
        },
        // Node reads a timeout of 0 as "wait forever".
        timeout: Math.max(1, timeoutMs),
      },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    r.on("timeout", () => r.destroy(new Error(`${req.method} ${req.path} timed out`)));
    r.on("error", reject);
    r.end(payload);
  });
}

export const FIRECRACKER_FEATURES: DriverFeatures = {
  userNetworking: false,
  needsKvm: true,
  snapshot: false,
  hotplugPorts: false,
};

/** Firecracker over its REST API. The process runs in its own session so it outlives bangerd. */
export class FirecrackerDriver implements Driver {
  readonly name = "firecracker" as const;
  readonly features = FIRECRACKER_FEATURES;
  readonly rootDisk: RootDisk;

  constructor(private readonly runner: CommandRunner) {
    this.rootDisk = copiedRootDisk(runner);
  }

  /** Firecracker leaves its API socket behind when it exits. */
  async removeFiles(vmDir: string): Promise<void> {
    await fsp.rm(path.join(vmDir, API_SOCKET), { force: true });
  }

  async start(spec: VmSpec): Promise<VmHandles> {
    const binary = await this.runner.which("firecracker");
    if (!binary)
      throw new BangerError(
        ErrorCode.Precondition,
        "firecracker is not installed",
        'set vmm = "qemu" in config.toml, or install Firecracker >= 1.8',
      );
    const requests = firecrackerRequests(spec);
    const socket = path.join(spec.dir, API_SOCKET);
    await fsp.rm(socket, { force: true });
    const console = fs.openSync(path.join(spec.dir, CONSOLE_LOG_FILE), "a");
    const child = spawn(binary, ["--api-sock", socket, "--id", `banger-${spec.name}`], {
      detached: true,
      stdio: ["ignore", console, console],
    });
    fs.closeSync(console);
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new BangerError(ErrorCode.Internal, "could not start firecracker");
    const handles: VmHandles = {
      vmm: "firecracker",
      pid,
      controlSocket: socket,
      consoleLog: path.join(spec.dir, CONSOLE_LOG_FILE),
      sshHost: spec.network.mode === "tap" ? spec.network.ip : "127.0.0.1",
      sshPort: 22,
      tap: spec.network.mode === "tap" ? spec.network.tap : null,
    };
    try {
      const deadline = Date.now() + 10_000;
      while (!fs.existsSync(socket)) {
        if (Date.now() > deadline || !isPidAlive(pid))
          throw new BangerError(
            ErrorCode.Internal,
            "firecracker did not open its API socket",
            `see ${handles.consoleLog}`,
          );
        await new Promise((r) => setTimeout(r, 50));
      }
      for (const req of requests) {
        const res = await apiRequest(socket, req);
        if (res.status >= 300) {
          throw new BangerError(
            ErrorCode.Internal,
            `firecracker refused ${req.method} ${req.path} (HTTP ${res.status}): ${res.body.slice(0, 300)}`,
          );
        }
      }
      return handles;
    } catch (err) {
      await this.kill(handles);
      throw err;
    }
  }

  status(handles: VmHandles): Promise<"running" | "stopped"> {
    return vmmStatus(handles, "firecracker");
  }

  async stop(handles: VmHandles, deadlineMs: number): Promise<void> {
    const end = Date.now() + deadlineMs;
    if ((await this.status(handles)) === "stopped") return;
    // A frozen VMM never answers: the request's own wait comes out of the deadline (none left: kill).
    if (deadlineMs > 0)
      await apiRequest(
        handles.controlSocket,
        { method: "PUT", path: "/actions", body: { action_type: "SendCtrlAltDel" } },
        Math.min(10_000, deadlineMs),
      ).catch(() => undefined);
    if (await waitForExit(handles.pid, Math.max(0, end - Date.now()))) return;
    await this.kill(handles);
  }

  kill(handles: VmHandles): Promise<void> {
    return killVmm(handles, "firecracker");
  }

  async describe(): Promise<string> {
    const r = await this.runner.run("firecracker", ["--version"]);
    return r.stdout.split("\n")[0] ?? "firecracker";
  }
}
