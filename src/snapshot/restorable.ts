import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { SnapshotRow, Store } from "../store/store.js";
import { SNAPSHOT_FILES, type Driver, type SnapshotSupport } from "../vmm/driver.js";
import { kernelFingerprint } from "./context.js";

export interface RestoreHost {
  store: Store;
  /** The snapshot's VMM driver here (VmContext.driverFor, which refuses one that is not available). */
  driver: Driver;
  /** The accelerator VMs start under now. */
  accel: "kvm" | "tcg";
  /** The snapshot's directory. */
  dir: string;
}

/**
 * Refuses, with what to do, a snapshot this host cannot restore as it is now: its image or
 * kernel gone, the kernel's files changed since (re-pulled or re-derived under the same name),
 * another VMM version or accelerator, or its files missing. A clone checks this before it is
 * made, and a restore may check it again (the host may have changed between the two).
 */
export async function checkRestorable(
  snap: SnapshotRow,
  host: RestoreHost,
): Promise<SnapshotSupport> {
  const retake = `take a new one from a VM booted as things are now, and 'banger snapshot delete ${snap.name}'`;
  const refuse = (message: string, hint: string = retake): never => {
    throw new BangerError(ErrorCode.Precondition, `snapshot "${snap.name}": ${message}`, hint);
  };
  if (!host.store.getImage(snap.imageId)) refuse("the image it was taken from is gone");
  const kernel = host.store.getKernel(snap.kernelRef);
  if (!kernel) refuse(`its kernel ${snap.kernelRef} is gone`);
  else if (kernelFingerprint(kernel) !== snap.kernelFingerprint)
    refuse(`kernel ${snap.kernelRef} changed since it was taken (pulled or derived again)`);
  if (!host.driver.snapshots) refuse(`the ${host.driver.name} VMM here cannot restore snapshots`);
  const version = await host.driver.describe();
  if (version !== snap.vmmVersion)
    refuse(`it was saved by ${snap.vmmVersion}; this host runs ${version}`);
  if (host.accel !== snap.accel)
    refuse(
      `it was saved under ${snap.accel.toUpperCase()}; VMs here start under ${host.accel.toUpperCase()}`,
      snap.accel === "kvm"
        ? `restore it where KVM works, or ${retake}`
        : `set accel = "tcg" in config.toml to restore it, or ${retake}`,
    );
  // What every VMM's snapshot has (Firecracker's also has its vmstate, which its load checks).
  for (const file of [SNAPSHOT_FILES.memory, SNAPSHOT_FILES.rootDisk, SNAPSHOT_FILES.workDisk]) {
    const stat = await fsp.lstat(path.join(host.dir, file)).catch(() => null);
    if (!stat?.isFile())
      refuse(`its file ${file} is missing`, `'banger snapshot delete ${snap.name}'`);
  }
  return host.driver.snapshots!;
}
