import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { KeyedLock } from "../util/keyed-lock.js";
import { GuestShell } from "../guest/shell.js";
import { ensureSshIdentity, type GuestTarget, type SshIdentity } from "../guest/ssh.js";
import type { ImageService } from "../image/service.js";
import type { KernelService } from "../kernel/service.js";
import type { NetworkBackend } from "../net/backend.js";
import { UserNetwork } from "../net/user-network.js";
import type { Layout } from "../paths/layout.js";
import type { Store, VmRow } from "../store/store.js";
import type { AccelDeps } from "../system/accel.js";
import type { CommandRunner } from "../system/runner.js";
import { WORK_DISK_FILES, type Driver, type VmHandles } from "../vmm/driver.js";

export interface VmLog {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface VmServiceDeps {
  store: Store;
  layout: Layout;
  runner: CommandRunner;
  images: ImageService;
  kernels: KernelService;
  /** VMM drivers by name; qemu is always there. */
  drivers: { qemu: Driver; firecracker?: Driver };
  /** Which VMM new VMs get (config vmm = auto|qemu|firecracker, resolved). */
  pickVmm: () => Promise<"qemu" | "firecracker">;
  /** How new VMs are networked (bridge networking); absent or null: rootless user-mode networking. */
  network?: NetworkBackend | null;
  host: { cpus: number; memoryBytes: number };
  accel?: AccelDeps;
  /** Overrides config `timeouts.ssh_wait`: how long `start` waits for SSH. */
  sshDeadlineMs?: number;
  /** Overrides config `timeouts.stop`. */
  stopDeadlineMs?: number;
  /** What `~/` means in `[[file_sync]]` host paths (default: the daemon user's home). */
  homeDir?: string;
  log?: VmLog;
}

/** The VM's work disk (mounted at /root in the guest), in its directory. */
export const WORK_DISK = WORK_DISK_FILES.raw;
/**
 * Written first into a new `vms/<id>/` and removed once its row exists (create.ts): the start-up
 * sweep (daemon/sweep.ts) removes a directory that still has it.
 */
export const VM_CREATING_MARKER = "creating";
/** Where a VM's handles are mirrored, so a restarted daemon can adopt it. */
const HANDLES_FILE = "handles.json";

export function vmInfo(
  row: VmRow,
  imageName: string | null,
  snapshotName: string | null = null,
): VmInfo {
  return {
    id: row.id,
    name: row.name,
    state: row.state,
    image: imageName,
    kernel: row.kernelRef,
    vcpu: row.vcpu,
    memoryBytes: row.memoryBytes,
    diskBytes: row.diskBytes,
    ip: row.ip,
    vmm: row.vmm,
    createdAt: row.createdAt,
    snapshot: snapshotName,
  };
}

export function notRunning(name: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidState,
    `VM ${name} is not running`,
    `'banger vm start ${name}' boots it`,
  );
}

/**
 * What every VM verb shares. Durable intent lives in the store; what is true right now
 * (pid, sockets, port) lives in `handles`, mirrored to vms/<id>/handles.json and to the
 * row's teardown field. Operations on one VM are serialised by its lock.
 */
export class VmContext {
  readonly handles = new Map<string, VmHandles>();
  readonly locks = new KeyedLock();
  /** Releases of VMs whose VMM exited, in flight (teardown.ts releaseIfExited), by VM id. */
  readonly exitReleases = new Map<string, Promise<boolean>>();
  /** Where new VMs are attached. */
  readonly network: NetworkBackend;
  /** Every network a VM's handles may hold a part of (one started under an earlier daemon's mode). */
  readonly networks: readonly NetworkBackend[];
  readonly shell: GuestShell;
  /** One key generation for every caller: two first creates at once ran ssh-keygen twice on one file. */
  private identity: Promise<SshIdentity> | null = null;

  constructor(readonly deps: VmServiceDeps) {
    const user = new UserNetwork(deps.runner, deps.log);
    this.network = deps.network ?? user;
    this.networks = [...new Set([this.network, user])];
    this.shell = new GuestShell(deps.runner);
  }

  driverFor(vmm: string | null): Driver {
    if (vmm === "firecracker") {
      if (!this.deps.drivers.firecracker) {
        throw new BangerError(
          ErrorCode.Precondition,
          "this VM uses Firecracker, which is not available here",
          'install firecracker, or recreate the VM with vmm = "qemu"',
        );
      }
      return this.deps.drivers.firecracker;
    }
    return this.deps.drivers.qemu;
  }

  dirOf(id: string): string {
    return path.join(this.deps.layout.vmsDir, id);
  }

  row(name: string): VmRow {
    const row = this.deps.store.getVmByName(name);
    if (!row)
      throw new BangerError(
        ErrorCode.NotFound,
        `no VM named ${JSON.stringify(name)}`,
        "'banger vm list' shows what exists",
      );
    return row;
  }

  info(row: VmRow): VmInfo {
    const image = row.imageId ? this.deps.store.getImage(row.imageId) : null;
    const snapshot = row.snapshotId ? this.deps.store.snapshots.byId(row.snapshotId) : null;
    return vmInfo(row, image?.name ?? null, snapshot?.name ?? null);
  }

  /**
   * Runs fn under the VM's lifecycle lock with its row as it is once the lock is held:
   * a row read before waiting may be stale (a start or stop that ran meanwhile). Async, so a
   * missing VM is a rejection, never a throw (callers chain .catch on it).
   */
  async withVmLock<T>(name: string, fn: (row: VmRow) => Promise<T>): Promise<T> {
    const id = this.row(name).id;
    return this.locks.run(id, async () => {
      const row = this.row(name);
      // Deleted and re-created under the same name while we waited: not the VM asked for.
      if (row.id !== id)
        throw new BangerError(
          ErrorCode.NotFound,
          `VM ${name} was deleted while this request waited`,
          "'banger vm list' shows what exists",
        );
      return fn(row);
    });
  }

  sshIdentity(): Promise<SshIdentity> {
    this.identity ??= ensureSshIdentity(this.deps.layout.sshDir, this.deps.runner).catch(
      (err: unknown) => {
        this.identity = null; // the next caller tries again
        throw err;
      },
    );
    return this.identity;
  }

  async writeHandles(row: VmRow, handles: VmHandles | null): Promise<void> {
    const file = path.join(this.dirOf(row.id), HANDLES_FILE);
    if (handles) {
      this.handles.set(row.id, handles);
      await fsp.writeFile(file, `${JSON.stringify(handles, null, 2)}\n`, { mode: 0o600 });
    } else {
      this.handles.delete(row.id);
      await fsp.rm(file, { force: true });
    }
  }

  /** Handles for a VM recorded as running: the cache, else handles.json, else the row's teardown copy. */
  async handlesOf(row: VmRow): Promise<VmHandles | null> {
    const cached = this.handles.get(row.id);
    if (cached) return cached;
    try {
      return JSON.parse(
        await fsp.readFile(path.join(this.dirOf(row.id), HANDLES_FILE), "utf8"),
      ) as VmHandles;
    } catch {
      try {
        return row.teardownJson ? (JSON.parse(row.teardownJson) as VmHandles) : null;
      } catch {
        return null;
      }
    }
  }

  /** Handles of a VM recorded as running; null for any other state. */
  async runningHandles(row: VmRow): Promise<VmHandles | null> {
    return row.state === "running" ? this.handlesOf(row) : null;
  }

  /** Handles of a VM whose VMM is alive right now; null otherwise. */
  async liveHandles(row: VmRow): Promise<VmHandles | null> {
    const handles = await this.runningHandles(row);
    if (!handles) return null;
    return (await this.driverFor(handles.vmm).status(handles)) === "running" ? handles : null;
  }

  /**
   * Recorded as running, and its VMM has exited (or left no handles). False when it cannot
   * tell (the VM's VMM is not available here): such a VM is left as recorded.
   */
  async vmmGone(row: VmRow): Promise<boolean> {
    if (row.state !== "running") return false;
    return this.liveHandles(row).then(
      (live) => live === null,
      () => false,
    );
  }

  /** How GuestShell reaches this VM's sshd. */
  async targetOf(row: VmRow, handles: VmHandles): Promise<GuestTarget> {
    return {
      vmId: row.id,
      vmName: row.name,
      host: handles.sshHost,
      port: handles.sshPort,
      identity: await this.sshIdentity(),
    };
  }
}
