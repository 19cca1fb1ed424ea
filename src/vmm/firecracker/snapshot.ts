import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";
import {
  SNAPSHOT_FILES,
  WORK_DISK_FILES,
  type RootDisk,
  type SavedState,
  type SaveRequest,
  type SnapshotSupport,
  type VmHandles,
} from "../driver.js";
import { allocatedBytes, copyRawDisk } from "../root-disk.js";
import { API_CALL_MS, callApi, type FirecrackerRequest } from "./api.js";
import { createSnapshot, drivesAt, vmState, type DrivePaths } from "./requests.js";

/** What the snapshots need of their driver. */
export interface FirecrackerSnapshotDeps {
  runner: CommandRunner;
  rootDisk: RootDisk;
  describe(): Promise<string>;
  kill(handles: VmHandles): Promise<void>;
}

/** A VM's own drives in its directory (the same names for a clone's: cloneDisks). */
export function ownDrives(rootDisk: RootDisk, vmDir: string): DrivePaths {
  return { root: rootDisk.path(vmDir), work: path.join(vmDir, WORK_DISK_FILES.raw) };
}

/**
 * Firecracker snapshots: PATCH /vm Paused, both raw disks copied at that instant, PUT
 * /snapshot/create (Full: guest memory and device state), then resumed (or stopped).
 *
 * The device state records each drive's host path, and a load opens those paths before any
 * PATCH can change them (this API has no drive override on load). So while paused the drives
 * are pointed at the snapshot's own copies for the create, and back at the VM's disks before
 * it runs: a restore opens the snapshot's files (which live as long as it does), never this
 * VM's, which may be gone or running by then.
 */
export class FirecrackerSnapshots implements SnapshotSupport {
  constructor(private readonly deps: FirecrackerSnapshotDeps) {}

  async save(handles: VmHandles, req: SaveRequest): Promise<SavedState> {
    const end = Date.now() + req.deadlineMs;
    const left = () => {
      const ms = end - Date.now();
      if (ms <= 0)
        throw new BangerError(
          ErrorCode.Internal,
          `the snapshot took longer than its ${Math.round(req.deadlineMs / 1000)} s limit`,
        );
      return ms;
    };
    const call = (r: FirecrackerRequest) =>
      callApi(handles.controlSocket, r, { timeoutMs: Math.min(API_CALL_MS, left()) });
    if (req.workDisk.format !== "raw")
      throw new BangerError(
        ErrorCode.InvalidParams,
        `Firecracker VMs have raw work disks, not ${req.workDisk.format} (${req.workDisk.file})`,
      );
    const own = { root: this.deps.rootDisk.path(req.vmDir), work: req.workDisk.file };
    const saved: DrivePaths = {
      root: path.join(req.dir, SNAPSHOT_FILES.rootDisk),
      work: path.join(req.dir, SNAPSHOT_FILES.workDisk),
    };

    // Asked before the pause: nothing that can fail may stand between the save and the resume.
    const vmmVersion = await this.deps.describe();
    await call(vmState("Paused"));
    const pausedAt = Date.now();
    let drivesMoved = false;
    try {
      // Sync I/O (banger never sets io_engine): every write the guest saw completed is in the
      // files now, so these copies are the disks at the paused instant.
      await copyRawDisk(this.deps.runner, own.root, saved.root, left());
      await copyRawDisk(this.deps.runner, own.work, saved.work, left());
      // Made 0600 before Firecracker writes guest memory into them (it keeps an existing mode).
      for (const f of [SNAPSHOT_FILES.memory, SNAPSHOT_FILES.vmstate])
        await fsp.writeFile(path.join(req.dir, f), "", { mode: 0o600, flag: "wx" });
      drivesMoved = true;
      for (const r of drivesAt(saved)) await call(r);
      await call(createSnapshot(req.dir));
    } catch (err) {
      await this.afterFailure(handles, own, drivesMoved).catch((stopped: unknown) => {
        throw new BangerError(
          ErrorCode.Internal,
          `${(err as Error).message}; then ${(stopped as Error).message}`,
          (stopped as BangerError).hint,
        );
      });
      throw err;
    }
    await this.moveBack(handles, own);
    if (req.resume) await callApi(handles.controlSocket, vmState("Resumed"));
    // The guest's state is in the snapshot: nothing of it is lost by stopping the VMM now.
    else await this.deps.kill(handles);
    const pausedMs = Date.now() - pausedAt;
    for (const f of [SNAPSHOT_FILES.memory, SNAPSHOT_FILES.vmstate])
      await fsp.chmod(path.join(req.dir, f), 0o600);
    let bytes = 0;
    for (const f of await fsp.readdir(req.dir))
      bytes += await allocatedBytes(path.join(req.dir, f));
    return { vmmVersion, bytes, pausedMs };
  }

  /**
   * The drives back on the VM's own disks: only then may it run (else it would write into the
   * snapshot). When that cannot be done the VMM is killed: its disks hold every write up to
   * the pause, as after a power cut.
   */
  private async moveBack(handles: VmHandles, own: DrivePaths): Promise<void> {
    try {
      for (const r of drivesAt(own)) await callApi(handles.controlSocket, r);
    } catch (err) {
      await this.deps.kill(handles);
      throw new BangerError(
        ErrorCode.Internal,
        `the VM was stopped: firecracker could not point its drives back at its own disks (${(err as Error).message})`,
        "its disks hold everything written before the snapshot: start it again",
      );
    }
  }

  /** A failed save runs the VM again, on its own disks (the contract: resume when it can). */
  private async afterFailure(handles: VmHandles, own: DrivePaths, drivesMoved: boolean) {
    if (drivesMoved) await this.moveBack(handles, own);
    await callApi(handles.controlSocket, vmState("Resumed")).catch(() => undefined);
  }

  async cloneDisks(snapshotDir: string, vmDir: string): Promise<"raw"> {
    const own = ownDrives(this.deps.rootDisk, vmDir);
    try {
      await copyRawDisk(
        this.deps.runner,
        path.join(snapshotDir, SNAPSHOT_FILES.rootDisk),
        own.root,
      );
      await copyRawDisk(
        this.deps.runner,
        path.join(snapshotDir, SNAPSHOT_FILES.workDisk),
        own.work,
      );
    } catch (err) {
      await fsp.rm(own.root, { force: true });
      await fsp.rm(own.work, { force: true });
      throw err;
    }
    return "raw";
  }
}
