import { spawn } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import type net from "node:net";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";
import type { Driver, DriverFeatures, RootDisk, VmHandles, VmSpec } from "../driver.js";
import { isPidAlive, killVmm, vmmStatus, waitForExit } from "../process.js";
import { CONSOLE_LOG_FILE } from "../console-log.js";
import { copiedRootDisk } from "../root-disk.js";
import { apiRequest, callApi } from "./api.js";
import {
  API_SOCKET,
  describeInstance,
  drivesAt,
  firecrackerRequests,
  restoreRequests,
  vmState,
  vmstateOf,
  VSOCK_SOCKET,
} from "./requests.js";
import { FirecrackerSnapshots, ownDrives } from "./snapshot.js";
import { connectVsock, IDENTITY_VSOCK_PORT } from "./vsock.js";

export const FIRECRACKER_FEATURES: DriverFeatures = {
  userNetworking: false,
  needsKvm: true,
  // `snapshots` is built, but off until a guest reader listens on the identity vsock port: a
  // clone that cannot be told who it is would share the saved VM's keys, entropy and address.
  snapshot: false,
  hotplugPorts: false,
};

/** Firecracker over its REST API. The process runs in its own session so it outlives bangerd. */
export class FirecrackerDriver implements Driver {
  readonly name = "firecracker" as const;
  readonly features = FIRECRACKER_FEATURES;
  readonly rootDisk: RootDisk;
  readonly snapshots: FirecrackerSnapshots;

  constructor(private readonly runner: CommandRunner) {
    this.rootDisk = copiedRootDisk(runner);
    this.snapshots = new FirecrackerSnapshots({
      runner,
      rootDisk: this.rootDisk,
      describe: () => this.describe(),
      kill: (handles) => this.kill(handles),
    });
  }

  /** Firecracker leaves its API and vsock sockets behind when it exits. */
  async removeFiles(vmDir: string): Promise<void> {
    await fsp.rm(path.join(vmDir, API_SOCKET), { force: true });
    await fsp.rm(path.join(vmDir, VSOCK_SOCKET), { force: true });
  }

  async start(spec: VmSpec): Promise<VmHandles> {
    const binary = await this.runner.which("firecracker");
    if (!binary)
      throw new BangerError(
        ErrorCode.Precondition,
        "firecracker is not installed",
        'set vmm = "qemu" in config.toml, or install Firecracker >= 1.8',
      );
    const requests = spec.restore ? restoreRequests(spec) : firecrackerRequests(spec);
    if (spec.restore) await checkSnapshotFiles(spec.restore.memory);
    const socket = path.join(spec.dir, API_SOCKET);
    await this.removeFiles(spec.dir);
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
      identitySocket: path.join(spec.dir, VSOCK_SOCKET),
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
      // A refused restore (a corrupt or foreign snapshot) is a failed boot: callers fall back.
      const failed = spec.restore
        ? {
            code: ErrorCode.BootFailed,
            hint: `the snapshot could not be restored; see ${path.join(spec.dir, "firecracker.log")}`,
          }
        : {};
      for (const req of requests) await callApi(socket, req, failed);
      return handles;
    } catch (err) {
      await this.kill(handles);
      throw err;
    }
  }

  /**
   * A running VM found at daemon start-up. One left paused by a daemon that died during a
   * snapshot or a restore may have its drives on a snapshot's files: back on its own, then run.
   */
  async adopt(handles: VmHandles): Promise<void> {
    const info = JSON.parse(await callApi(handles.controlSocket, describeInstance)) as {
      state?: unknown;
    };
    if (info.state !== "Paused") return;
    const vmDir = path.dirname(handles.controlSocket);
    for (const req of drivesAt(ownDrives(this.rootDisk, vmDir)))
      await callApi(handles.controlSocket, req);
    await callApi(handles.controlSocket, vmState("Resumed"));
  }

  /**
   * The identity channel of a restored VM: a stream to the guest's reader on its vsock port
   * (Firecracker has no virtio-serial; QEMU's is handles.identitySocket itself).
   */
  identityChannel(handles: VmHandles, timeoutMs: number): Promise<net.Socket> {
    if (!handles.identitySocket)
      throw new BangerError(
        ErrorCode.Precondition,
        "this VM was started without a vsock device: it has no identity channel",
      );
    return connectVsock(handles.identitySocket, IDENTITY_VSOCK_PORT, timeoutMs);
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

/** A restore names files Firecracker would only report as a load error: say which is missing. */
export async function checkSnapshotFiles(memory: string): Promise<void> {
  for (const file of [memory, vmstateOf(memory)]) {
    if (!(await fsp.stat(file).catch(() => null))?.isFile())
      throw new BangerError(
        ErrorCode.BootFailed,
        `the snapshot's ${path.basename(file)} file is missing (${file}): it was not saved by Firecracker, or is damaged`,
        "delete the snapshot ('banger snapshot delete'); a cold boot does not need it",
      );
  }
}
