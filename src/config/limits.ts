import { BangerError, ErrorCode } from "../api/errors.js";
import { formatSizeBytes } from "../util/size.js";
import { MIN_MEMORY_BYTES } from "./vm-defaults.js";

/** The host facts the bounds depend on (vm-defaults' hostResources() gives the real ones). */
export interface HostLimits {
  cpus: number;
  memoryBytes: number;
}

const MiB = 1024 ** 2;

/** QEMU's microvm and Firecracker both go further, but no throwaway VM needs more. */
export const MAX_VCPU = 64;
/** vCPUs may overcommit the host this much (a user may test with more threads than cores). */
export const VCPU_OVERCOMMIT = 2;
/** The work disk needs room for ext4's own metadata and the synced files. */
export const MIN_DISK_BYTES = 64 * MiB;
/** Sparse, so only what the guest writes costs anything; past this it is a typo. */
export const MAX_DISK_BYTES = 16 * 1024 ** 4;

export function maxVcpu(host: HostLimits): number {
  return Math.max(1, Math.min(MAX_VCPU, VCPU_OVERCOMMIT * host.cpus));
}

/**
 * Why a VM shape value cannot work on this host, or null when it can. The same bounds hold for
 * the config file, the CLI's flags and the daemon's vm.create / vm.set.
 */
export function vmShapeProblem(
  what: "vcpu" | "memory" | "disk",
  value: number,
  host: HostLimits,
): string | null {
  if (!Number.isSafeInteger(value) || value <= 0) return `${value} must be a positive whole number`;
  if (what === "vcpu") {
    const max = maxVcpu(host);
    if (value > max)
      return `${value} vCPUs is more than ${max} (${VCPU_OVERCOMMIT}x this host's ${host.cpus} CPUs, at most ${MAX_VCPU})`;
    return null;
  }
  if (what === "memory") {
    if (value < MIN_MEMORY_BYTES)
      return `${formatSizeBytes(value)} is below the floor of ${formatSizeBytes(MIN_MEMORY_BYTES)} (a systemd guest needs it)`;
    if (value > host.memoryBytes)
      return `${formatSizeBytes(value)} is more than this host's memory (${formatSizeBytes(host.memoryBytes)})`;
    return null;
  }
  if (value < MIN_DISK_BYTES) return `${formatSizeBytes(value)} is below the floor of 64 MiB`;
  if (value > MAX_DISK_BYTES) return `${formatSizeBytes(value)} is more than the limit of 16 TiB`;
  return null;
}

const HINTS = {
  vcpu: "use --vcpu 1 to 4 for most work",
  memory: "try --memory 1G (or 2G)",
  disk: "try --disk-size 8G",
} as const;

/** Throws the first problem of a VM's vcpu/memory/disk, as the daemon and CLI report it. */
export function checkVmShape(
  shape: {
    vcpu?: number | undefined;
    memoryBytes?: number | undefined;
    diskBytes?: number | undefined;
  },
  host: HostLimits,
): void {
  const parts = [
    ["vcpu", shape.vcpu],
    ["memory", shape.memoryBytes],
    ["disk", shape.diskBytes],
  ] as const;
  for (const [what, value] of parts) {
    if (value === undefined) continue;
    const problem = vmShapeProblem(what, value, host);
    if (problem !== null)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what === "disk" ? "work disk" : what}: ${problem}`,
        HINTS[what],
      );
  }
}
