import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import { SNAPSHOT_FILES, type VmSpec } from "../driver.js";
import type { FirecrackerRequest } from "./api.js";

const MiB = 1024 * 1024;

/** Firecracker's files in the VM's directory: its API socket and its vsock's unix socket. */
export const API_SOCKET = "firecracker.sock";
export const VSOCK_SOCKET = "vsock.sock";
/**
 * The guest's vsock address. Each Firecracker has its own vsock (a unix socket, no host
 * vhost-vsock), so every VM can have the same one.
 */
export const GUEST_CID = 3;

/** The VM's drives, by Firecracker drive id. */
export interface DrivePaths {
  root: string;
  work: string;
}

function tapOf(spec: VmSpec): { tap: string; mac: string } {
  if (spec.network.mode !== "tap") {
    throw new BangerError(
      ErrorCode.Precondition,
      "Firecracker has no user-mode networking",
      'run bangerd as root for bridge networking, or set vmm = "qemu"',
    );
  }
  return { tap: spec.network.tap, mac: spec.network.mac };
}

function logger(spec: VmSpec): FirecrackerRequest {
  return {
    method: "PUT",
    path: "/logger",
    body: {
      log_path: path.join(spec.dir, "firecracker.log"),
      level: "Warning",
      show_level: true,
      show_log_origin: false,
    },
  };
}

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
  const { tap, mac } = tapOf(spec);
  rawWorkDisk(spec);
  return [
    logger(spec),
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
    ...(["root", "work"] as const).map((id): FirecrackerRequest => ({
      method: "PUT",
      path: `/drives/${id}`,
      body: {
        drive_id: id,
        path_on_host: id === "root" ? spec.rootDisk : spec.workDisk,
        is_root_device: false,
        is_read_only: false,
      },
    })),
    {
      method: "PUT",
      path: "/network-interfaces/eth0",
      body: { iface_id: "eth0", host_dev_name: tap, guest_mac: mac },
    },
    // The identity channel of a restored VM (src/vmm/firecracker/vsock.ts): Firecracker has
    // no virtio-serial. Part of every VM, so every snapshot has it.
    {
      method: "PUT",
      path: "/vsock",
      body: { guest_cid: GUEST_CID, uds_path: path.join(spec.dir, VSOCK_SOCKET) },
    },
    { method: "PUT", path: "/actions", body: { action_type: "InstanceStart" } },
  ];
}

/** Firecracker reads raw files only: a qcow2 work disk (QEMU's clone overlay) cannot be its. */
function rawWorkDisk(spec: VmSpec): void {
  if (spec.workDiskFormat === "qcow2")
    throw new BangerError(
      ErrorCode.InvalidParams,
      `Firecracker cannot use the qcow2 work disk of ${spec.name}: it reads raw disks only`,
      'a VM made from a QEMU snapshot needs vmm = "qemu"',
    );
}

/** The snapshot's device state file, beside its memory file (VmSpec.restore names the memory). */
export function vmstateOf(memory: string): string {
  return path.join(path.dirname(memory), SNAPSHOT_FILES.vmstate);
}

/**
 * The REST calls that restore a snapshot into a fresh Firecracker instead of booting, in
 * order: load paused onto this VM's own tap and vsock socket, point both drives at this VM's
 * own copies (the device state names the snapshot's files: see snapshot.ts), then run.
 * No machine-config or boot-source: the snapshot holds them.
 */
export function restoreRequests(spec: VmSpec): FirecrackerRequest[] {
  if (!spec.restore) throw new Error("restoreRequests needs spec.restore");
  // The MAC is in the device state: the guest takes its new one from the identity line.
  const { tap } = tapOf(spec);
  rawWorkDisk(spec);
  return [
    logger(spec),
    {
      method: "PUT",
      path: "/snapshot/load",
      body: {
        snapshot_path: vmstateOf(spec.restore.memory),
        mem_backend: { backend_type: "File", backend_path: spec.restore.memory },
        resume_vm: false,
        network_overrides: [{ iface_id: "eth0", host_dev_name: tap }],
        vsock_override: { uds_path: path.join(spec.dir, VSOCK_SOCKET) },
      },
    },
    ...drivesAt({ root: spec.rootDisk, work: spec.workDisk }),
    vmState("Resumed"),
  ];
}

/** Points the running (or paused) VM's drives at these files (PATCH: post-boot). */
export function drivesAt(paths: DrivePaths): FirecrackerRequest[] {
  return (["root", "work"] as const).map((id) => ({
    method: "PATCH",
    path: `/drives/${id}`,
    body: { drive_id: id, path_on_host: paths[id] },
  }));
}

export function vmState(state: "Paused" | "Resumed"): FirecrackerRequest {
  return { method: "PATCH", path: "/vm", body: { state } };
}

/** A full snapshot: guest memory and device state, into the snapshot's directory. */
export function createSnapshot(dir: string): FirecrackerRequest {
  return {
    method: "PUT",
    path: "/snapshot/create",
    body: {
      snapshot_type: "Full",
      snapshot_path: path.join(dir, SNAPSHOT_FILES.vmstate),
      mem_file_path: path.join(dir, SNAPSHOT_FILES.memory),
    },
  };
}

/** The instance's state (GET /): "Not started", "Running" or "Paused". */
export const describeInstance: FirecrackerRequest = { method: "GET", path: "/" };
