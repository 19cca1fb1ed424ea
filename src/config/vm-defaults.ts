import os from "node:os";
import { formatSizeBytes } from "../util/size.js";
import type { Config } from "./config.js";

export type Provenance = "config" | "auto" | "builtin";

export interface Resolved {
  value: number;
  source: Provenance;
}

export interface VmDefaults {
  vcpu: Resolved;
  memoryBytes: Resolved;
  diskBytes: Resolved;
}

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

/** Built-in floor: what a VM gets when neither config nor the host says more. */
export const BUILTIN_VM_DEFAULTS = { vcpu: 1, memoryBytes: 512 * MiB, diskBytes: 8 * GiB } as const;
/** The least memory a user may ask for: a systemd guest does not boot in less. */
export const MIN_MEMORY_BYTES = 256 * MiB;

/**
 * Three layers, first hit wins: config `[vm_defaults]`, then what the host can
 * spare (a quarter of its CPUs up to 4, an eighth of its RAM up to 8 GiB), then
 * the built-in floor. Pure: the host's numbers come in as an argument.
 */
export function resolveVmDefaults(
  config: Config,
  host: { cpus: number; memoryBytes: number },
): VmDefaults {
  const auto = (value: number, floor: number): Resolved =>
    value >= floor ? { value, source: "auto" } : { value: floor, source: "builtin" };
  const fromConfig = (value: number | null): Resolved | null =>
    value === null ? null : { value, source: "config" };

  const hostVcpu = Math.min(4, Math.floor(host.cpus / 4));
  const hostMemory = Math.floor(Math.min(8 * GiB, host.memoryBytes / 8) / MiB) * MiB;
  return {
    vcpu: fromConfig(config.vmDefaults.vcpu) ?? auto(hostVcpu, BUILTIN_VM_DEFAULTS.vcpu),
    memoryBytes:
      fromConfig(config.vmDefaults.memoryBytes) ??
      auto(hostMemory, BUILTIN_VM_DEFAULTS.memoryBytes),
    diskBytes: fromConfig(config.vmDefaults.diskBytes) ?? {
      value: BUILTIN_VM_DEFAULTS.diskBytes,
      source: "builtin",
    },
  };
}

/** `vcpu 2 (auto) · memory 2 GiB (auto) · disk 8 GiB (builtin)` */
export function describeVmDefaults(d: VmDefaults): string {
  return [
    `vcpu ${d.vcpu.value} (${d.vcpu.source})`,
    `memory ${formatSizeBytes(d.memoryBytes.value)} (${d.memoryBytes.source})`,
    `disk ${formatSizeBytes(d.diskBytes.value)} (${d.diskBytes.source})`,
  ].join(" · ");
}

/** The host's CPU count and RAM: the only impure input to the resolver. */
export function hostResources(): { cpus: number; memoryBytes: number } {
  return { cpus: os.availableParallelism(), memoryBytes: os.totalmem() };
}
