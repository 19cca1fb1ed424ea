import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import { createRootOverlay } from "../../disk/work-disk.js";
import { shellQuote } from "../../guest/ssh.js";
import { runChecked, type CommandRunner } from "../../system/runner.js";
import {
  SNAPSHOT_FILES,
  type SaveRequest,
  type SavedState,
  type SnapshotSupport,
  type RootDisk,
  type VmHandles,
  WORK_DISK_FILES,
} from "../driver.js";
import { allocatedBytes } from "../root-disk.js";
import { waitForExit } from "../process.js";
import { qmpExecute } from "./qmp.js";

/** What a QEMU snapshot is made of (its memory file also holds the device state). */
const QEMU_FILES = [SNAPSHOT_FILES.memory, SNAPSHOT_FILES.rootDisk, SNAPSHOT_FILES.workDisk];

/** How long cont, quit and migrate_cancel may take whatever is left of a save's deadline. */
const RECOVER_MS = 5_000;

/** How often a save polls QEMU's migration status. */
const POLL_MS = 50;

export interface QemuSnapshotDeps {
  runner: CommandRunner;
  rootDisk: RootDisk;
  describe: () => Promise<string>;
}

/**
 * Snapshots through QEMU's migration: pause, stream memory and device state into a file, copy
 * both disks at that paused instant, then run on (or quit). Restoring is `-incoming` on a new
 * QEMU with the same devices (qemuArgs), over overlays of the saved disks (cloneDisks).
 */
export function qemuSnapshots(deps: QemuSnapshotDeps): SnapshotSupport {
  return {
    save: (handles, req) => save(deps, handles, req),
    async cloneDisks(snapshotDir, vmDir) {
      await createRootOverlay({
        backing: path.join(snapshotDir, SNAPSHOT_FILES.rootDisk),
        backingFormat: "qcow2",
        file: deps.rootDisk.path(vmDir),
        runner: deps.runner,
      });
      await createRootOverlay({
        backing: path.join(snapshotDir, SNAPSHOT_FILES.workDisk),
        file: path.join(vmDir, WORK_DISK_FILES.qcow2),
        runner: deps.runner,
      });
      return "qcow2";
    },
  };
}

async function save(
  deps: QemuSnapshotDeps,
  handles: VmHandles,
  req: SaveRequest,
): Promise<SavedState> {
  if (!handles.identitySocket) {
    throw new BangerError(
      ErrorCode.Precondition,
      "this VM was booted before banger could snapshot it (it has no identity channel)",
      "restart it ('banger vm restart <name>'), then snapshot it",
    );
  }
  const end = Date.now() + req.deadlineMs;
  const left = () => Math.max(1, end - Date.now());
  const qmp = (command: string, args?: Record<string, unknown>) =>
    qmpExecute(handles.controlSocket, command, args, Math.min(5_000, left()));
  // What runs the VM again (or ends it) has its own bound: a save past its deadline must not
  // leave the guest paused for want of time to say cont.
  const recover = (command: string) =>
    qmpExecute(handles.controlSocket, command, undefined, RECOVER_MS);
  const vmmVersion = await deps.describe();
  const memory = path.join(req.dir, SNAPSHOT_FILES.memory);
  // The files hold guest memory and disks: the user's alone, made so before anything is in them.
  await fsp.writeFile(memory, "", { mode: 0o600 });
  const paused = Date.now();
  let pausedMs = 0;
  try {
    await qmp("stop");
    await qmp("migrate", { uri: `exec:cat > ${shellQuote(memory)}` });
    await migrated(qmp, end);
    // The migration's end flushed QEMU's disk caches into the files: they are consistent now.
    await copyRoot(deps.runner, deps.rootDisk.path(req.vmDir), req);
    await copyWork(deps.runner, req);
    for (const f of QEMU_FILES) await fsp.chmod(path.join(req.dir, f), 0o600);
  } catch (err) {
    await recover("migrate_cancel").catch(() => undefined);
    // Nothing was saved: the VM runs on, --stop or not (it asked to stop after a save).
    await recover("cont").catch(() => undefined);
    throw err;
  }
  if (req.resume) {
    await recover("cont");
    pausedMs = Date.now() - paused;
  } else {
    pausedMs = Date.now() - paused;
    await recover("quit").catch(() => undefined);
    await waitForExit(handles.pid, RECOVER_MS);
  }
  let bytes = 0;
  for (const f of QEMU_FILES) bytes += await allocatedBytes(path.join(req.dir, f));
  return { vmmVersion, bytes, pausedMs };
}

/** Waits for the memory stream to finish; a failed or stalled one is an error. */
async function migrated(
  qmp: (command: string) => Promise<Record<string, unknown>>,
  end: number,
): Promise<void> {
  for (;;) {
    const info = await qmp("query-migrate");
    const status = String(info.status ?? "");
    if (status === "completed") return;
    if (status === "failed" || status === "cancelled") {
      throw new BangerError(
        ErrorCode.Internal,
        `QEMU could not save the VM's memory: ${String(info["error-desc"] ?? status)}`,
        "check the free space of banger's state directory ('df -h'), then try again",
      );
    }
    if (Date.now() > end)
      throw new BangerError(ErrorCode.Internal, "saving the VM's memory took too long");
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/**
 * The saved root depends only on the image: a VM's own overlay (backed by the image) is copied as
 * it is; a clone's (backed by another snapshot's root, backed by the image) is copied, then
 * rebased onto the image in qemu-img's safe mode, which writes into the copy every cluster where
 * the snapshot below differs from the image (its first boot's host keys, its files), so nothing
 * of that layer is lost when the copy stops naming it.
 */
async function copyRoot(runner: CommandRunner, root: string, req: SaveRequest): Promise<void> {
  const dest = path.join(req.dir, SNAPSHOT_FILES.rootDisk);
  const info = JSON.parse(
    (await runChecked(runner, "qemu-img", ["info", "-U", "--output=json", root])).stdout,
  ) as { "full-backing-filename"?: string; "backing-filename"?: string };
  const backing = info["full-backing-filename"] ?? info["backing-filename"];
  await runChecked(runner, "cp", ["--sparse=always", root, dest]);
  if (backing && path.resolve(backing) === path.resolve(req.imageRootfs)) return;
  await runChecked(
    runner,
    "qemu-img",
    ["rebase", "-q", "-f", "qcow2", "-b", path.resolve(req.imageRootfs), "-F", "raw", dest],
    { timeoutMs: 600_000 },
  );
}

/** The saved work disk is a plain raw ext4 whatever the VM had (its own raw, or a clone's qcow2). */
async function copyWork(runner: CommandRunner, req: SaveRequest): Promise<void> {
  const dest = path.join(req.dir, SNAPSHOT_FILES.workDisk);
  if (req.workDisk.format === "raw") {
    await runChecked(runner, "cp", ["--sparse=always", req.workDisk.file, dest]);
    return;
  }
  await runChecked(runner, "qemu-img", ["convert", "-U", "-O", "raw", req.workDisk.file, dest]);
}
