import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { BangerError, ErrorCode } from "../api/errors.js";
import { readConfigSync } from "../config/config.js";
import {
  checkVmShape,
  MAX_VCPU,
  maxVcpu,
  VCPU_OVERCOMMIT,
  type HostLimits,
} from "../config/limits.js";
import { describeVmDefaults, hostResources, resolveVmDefaults } from "../config/vm-defaults.js";
import { formatSizeShort, parseSize } from "../util/size.js";
import type { CliDeps } from "./context.js";

/** `--help` of create/run shows what a VM gets when no flag is given, and where each value came from. */
export function resolvedDefaultsHelp(deps: CliDeps): string {
  try {
    const config = readConfigSync(deps.layout.configFile);
    return `\nDefaults on this machine: ${describeVmDefaults(resolveVmDefaults(config, deps.host))}\n(config: ${deps.layout.configFile})\n`;
  } catch (err) {
    return `\nDefaults: cannot be resolved: ${(err as Error).message}\n`;
  }
}

export function vmSizingOptions(cmd: CommandUnknownOpts): CommandUnknownOpts {
  cmd
    .option("--image <name>", "image to boot (default: config default_image_name)")
    .option("--vcpu <n>", "virtual CPUs")
    .option("--memory <size>", "memory, e.g. 2G or 2048 (MiB)")
    .option("--disk-size <size>", "work disk size, e.g. 8G")
    .option("--nat", "give the VM outbound network access through NAT")
    .option(
      "--cold",
      "boot from the image even when a boot snapshot of this shape exists (no warm start)",
    );
  return cmd;
}

/** `--vcpu` as given on the command line: a whole number the host can run. */
export function parseVcpu(text: string, host: HostLimits = hostResources()): number {
  const n = /^\d{1,4}$/.test(text.trim()) ? Number(text) : NaN;
  const max = maxVcpu(host);
  if (!Number.isInteger(n) || n < 1 || n > max) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid --vcpu "${text}"`,
      `a whole number from 1 to ${max} (${VCPU_OVERCOMMIT}x this host's ${host.cpus} CPUs, at most ${MAX_VCPU})`,
    );
  }
  return n;
}

/** The size a new VM gets: the flags given, else the resolved defaults. */
export interface VmSizing {
  vcpu: number;
  memoryBytes: number;
  diskBytes: number;
}

/** Resolves --vcpu/--memory/--disk-size against the defaults and prints the `spec:` line on stderr. */
export function resolveSizing(
  deps: CliDeps,
  o: { vcpu?: string | undefined; memory?: string | undefined; diskSize?: string | undefined },
): VmSizing {
  const defaults = resolveVmDefaults(readConfigSync(deps.layout.configFile), deps.host);
  const vcpu = o.vcpu ? parseVcpu(o.vcpu, deps.host) : defaults.vcpu.value;
  const memoryBytes = o.memory ? parseSize(o.memory) : defaults.memoryBytes.value;
  const diskBytes = o.diskSize ? parseSize(o.diskSize) : defaults.diskBytes.value;
  // The daemon checks too; failing here says so before anything starts.
  checkVmShape({ vcpu, memoryBytes, diskBytes }, deps.host);
  deps.out.stderr.write(
    `spec: ${vcpu} vcpu · ${Math.floor(memoryBytes / 2 ** 20)} MiB · ${formatSizeShort(diskBytes)} disk\n`,
  );
  return { vcpu, memoryBytes, diskBytes };
}
