import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import type { GuestIdentity } from "../guest/identity.js";
import type { NetworkAttachment } from "../net/backend.js";
import { WORK_DISK_FILES } from "../vmm/driver.js";

/**
 * Written into a clone's directory when it is made from a snapshot: its next start restores that
 * saved state instead of booting (src/vm/start.ts), and removes the marker, whether the restore
 * worked or fell back to a cold boot. Later starts boot its disks cold.
 */
export const RESTORE_MARKER = "restore";

export interface RestoreMarker {
  /** The snapshot's name, for progress and warnings. */
  snapshot: string;
  /** Its memory and device state file. */
  memory: string;
}

export async function writeRestoreMarker(vmDir: string, marker: RestoreMarker): Promise<void> {
  await fsp.writeFile(path.join(vmDir, RESTORE_MARKER), `${JSON.stringify(marker)}\n`, {
    mode: 0o600,
  });
}

/** The marker, or null when there is none (or it is unreadable: then the VM boots cold). */
export async function readRestoreMarker(vmDir: string): Promise<RestoreMarker | null> {
  const text = await fsp.readFile(path.join(vmDir, RESTORE_MARKER), "utf8").catch(() => null);
  if (text === null) return null;
  try {
    const m = JSON.parse(text) as Partial<RestoreMarker>;
    return typeof m.snapshot === "string" && typeof m.memory === "string"
      ? { snapshot: m.snapshot, memory: m.memory }
      : null;
  } catch {
    return null;
  }
}

export async function clearRestoreMarker(vmDir: string): Promise<void> {
  await fsp.rm(path.join(vmDir, RESTORE_MARKER), { force: true });
}

/** The VM's work disk: a clone's qcow2 overlay when it has one, else its own raw ext4. */
export async function workDiskOf(
  vmDir: string,
): Promise<{ file: string; format: "raw" | "qcow2" }> {
  const overlay = path.join(vmDir, WORK_DISK_FILES.qcow2);
  const isClone = await fsp.stat(overlay).then(
    () => true,
    () => false,
  );
  return isClone
    ? { file: overlay, format: "qcow2" }
    : { file: path.join(vmDir, WORK_DISK_FILES.raw), format: "raw" };
}

/**
 * Who a restored clone is now: the name, address, gateway and resolver a cold boot would get on
 * its kernel command line (the attachment's `banger.*` arguments), its own MAC, the host's clock
 * and fresh entropy, and new host keys and machine-id (`clone`).
 */
export function identityFor(name: string, attached: NetworkAttachment): GuestIdentity {
  const arg = (key: string) =>
    attached.kernelArgs.find((a) => a.startsWith(`banger.${key}=`))?.slice(key.length + 8) ?? null;
  return {
    ...resumedIdentity(name),
    ip: arg("ip"),
    gw: arg("gw"),
    dns: arg("dns"),
    mac: attached.mac,
    clone: true,
  };
}

/**
 * A VM that runs on after its own save: the same VM (its address and host keys stay, banger
 * pinned them), with the host's clock after the pause and fresh entropy.
 */
export function resumedIdentity(name: string): GuestIdentity {
  return {
    hostname: name,
    ip: null,
    gw: null,
    dns: null,
    mac: null,
    epochSeconds: Math.floor(Date.now() / 1000),
    seedHex: randomBytes(32).toString("hex"),
    clone: false,
  };
}

/** How long a restored guest has to apply its identity and answer. */
export const IDENTITY_MS = 30_000;

/** A restore that did not bring the VM up; the start falls back to a cold boot. */
export class RestoreFailed extends Error {
  constructor(readonly reason: unknown) {
    super(reason instanceof Error ? reason.message : String(reason));
  }
}
