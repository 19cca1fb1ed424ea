import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { BangerError, ErrorCode } from "../api/errors.js";
import { readConfigSync } from "../config/config.js";
import { describeVmDefaults, resolveVmDefaults } from "../config/vm-defaults.js";
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
    .option("--nat", "give the VM outbound network access through NAT");
  return cmd;
}

/** `--vcpu` as given on the command line. */
export function parseVcpu(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid --vcpu "${text}"`,
      "a whole number from 1 to 64",
    );
  }
  return n;
}
