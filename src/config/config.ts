import fs from "node:fs";
import fsp from "node:fs/promises";
import { parse as parseToml, TomlError } from "smol-toml";
import { BangerError, ErrorCode } from "../api/errors.js";
import { readRegularFile, readRegularFileSync } from "../util/regular-file.js";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits } from "../image/limits.js";
import type { HostLimits } from "./limits.js";
import { applyConfigTables } from "./tables.js";
import type { Table } from "./values.js";
import { hostResources } from "./vm-defaults.js";
import { DEFAULT_BRIDGE, DEFAULT_IMAGE_NAME, DEFAULT_SUBNET } from "./defaults.js";

/**
 * What config.toml holds (types and defaults) and reading it; each table's keys are checked in
 * tables.ts, single values in values.ts.
 */

export type VmmSetting = "auto" | "qemu" | "firecracker";
export type AccelSetting = "auto" | "kvm" | "tcg";

export interface FileSyncEntry {
  /** `~/...` or absolute, as written; expanded when used. */
  host: string;
  /** Under `~/` or `/root/`, as written. */
  guest: string;
  /** Permission bits; files default to 0600 when absent. */
  mode: number | null;
}

export interface Config {
  defaultImageName: string;
  vmm: VmmSetting;
  accel: AccelSetting;
  vmDefaults: { vcpu: number | null; memoryBytes: number | null; diskBytes: number | null };
  network: {
    bridge: string;
    subnet: string;
    dnsPort: number;
    /** Idle taps kept ready on the bridge; 0 creates each on demand. */
    tapPoolSize: number;
    /** banger-helper's socket for an unprivileged daemon; null means the default path. */
    helperSocket: string | null;
  };
  fileSync: FileSyncEntry[];
  /** A VM's serial console keeps the newest this many bytes on disk (console_log_size). */
  consoleLogBytes: number;
  /** Bounds on what an image pull (or build) may download and unpack. */
  image: ImageLimits;
  /** How long a VM start waits for SSH, and a graceful stop for the VMM to exit ([timeouts]). */
  timeouts: { sshWaitMs: number; stopMs: number };
}

export function defaultConfig(): Config {
  return {
    defaultImageName: DEFAULT_IMAGE_NAME,
    vmm: "auto",
    accel: "auto",
    vmDefaults: { vcpu: null, memoryBytes: null, diskBytes: null },
    network: {
      bridge: DEFAULT_BRIDGE,
      subnet: DEFAULT_SUBNET,
      dnsPort: 53,
      tapPoolSize: 2,
      helperSocket: null,
    },
    fileSync: [],
    consoleLogBytes: 4 * 1024 * 1024,
    image: { ...DEFAULT_IMAGE_LIMITS },
    timeouts: { sshWaitMs: 90_000, stopMs: 30_000 },
  };
}

/** A config file larger than this is not a config file (and is not read into memory). */
export const MAX_CONFIG_BYTES = 1024 * 1024;

/**
 * Reads and validates the config file; a missing file means all defaults. It must be a regular
 * file (a symlink to one is fine): a FIFO would hang, /dev/zero would never end.
 */
export async function loadConfig(
  file: string,
  host: HostLimits = hostResources(),
): Promise<Config> {
  if (await fsp.lstat(file).then(() => false, isMissing)) return defaultConfig();
  let bytes: Buffer;
  try {
    bytes = await readRegularFile(file, "the config file", {
      follow: true,
      maxBytes: MAX_CONFIG_BYTES,
    });
  } catch (err) {
    throw configReadError(file, err);
  }
  return parseConfig(decodeConfig(bytes, file), file, host);
}

/** Same as loadConfig, for the few places that cannot await (help text). */
export function readConfigSync(file: string, host: HostLimits = hostResources()): Config {
  try {
    fs.lstatSync(file);
  } catch (err) {
    if (isMissing(err)) return defaultConfig();
  }
  let bytes: Buffer;
  try {
    bytes = readRegularFileSync(file, "the config file", MAX_CONFIG_BYTES);
  } catch (err) {
    throw configReadError(file, err);
  }
  return parseConfig(decodeConfig(bytes, file), file, host);
}

function isMissing(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === "ENOENT";
}

function configReadError(file: string, err: unknown): BangerError {
  const message =
    err instanceof BangerError
      ? err.message
      : `cannot read the config file ${file}: ${(err as Error).message}`;
  return new BangerError(
    ErrorCode.InvalidParams,
    message,
    `make ${file} a regular TOML file of at most 1 MiB (docs/config.md), or remove it to use the defaults`,
  );
}

function decodeConfig(bytes: Buffer, file: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${file}: not valid UTF-8 text`,
      `TOML files are UTF-8; fix ${file}`,
    );
  }
}

/** Validates config text; every error names the file and the offending key or entry. */
export function parseConfig(
  text: string,
  source: string,
  host: HostLimits = hostResources(),
): Config {
  const fail = (where: string, why: string): never => {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${source}: ${where}: ${why}`,
      `edit ${source}; docs/config.md lists every key`,
    );
  };
  let raw: Table;
  try {
    raw = parseToml(text) as Table;
  } catch (err) {
    const line = err instanceof TomlError ? ` line ${err.line}` : "";
    const why = err instanceof Error ? err.message.split("\n")[0] : String(err);
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${source}:${line}: invalid TOML: ${why}`,
      `fix the syntax in ${source}`,
    );
  }

  const config = defaultConfig();
  applyConfigTables(raw, config, host, fail);
  return config;
}
