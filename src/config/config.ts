import fs from "node:fs";
import fsp from "node:fs/promises";
import { parse as parseToml, TomlError } from "smol-toml";
import { BangerError, ErrorCode } from "../api/errors.js";
import { readRegularFile, readRegularFileSync } from "../util/regular-file.js";
import { DEFAULT_IMAGE_LIMITS, type ImageLimits } from "../image/limits.js";
import { parseSize } from "../util/size.js";
import { MAX_VCPU, maxVcpu, VCPU_OVERCOMMIT, vmShapeProblem, type HostLimits } from "./limits.js";
import { hostResources } from "./vm-defaults.js";

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
    defaultImageName: "debian-bookworm",
    vmm: "auto",
    accel: "auto",
    vmDefaults: { vcpu: null, memoryBytes: null, diskBytes: null },
    network: {
      bridge: "banger0",
      subnet: "172.30.0.0/24",
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

const TOP_KEYS = [
  "default_image_name",
  "vmm",
  "accel",
  "vm_defaults",
  "network",
  "file_sync",
  "console_log_size",
  "image",
  "timeouts",
];
const VM_DEFAULT_KEYS = ["vcpu", "memory", "disk_size"];
const NETWORK_KEYS = ["bridge", "subnet", "dns_port", "tap_pool_size", "helper_socket"];
const FILE_SYNC_KEYS = ["host", "guest", "mode"];
const IMAGE_KEYS = ["max_layer_size", "max_image_size", "max_entries"];
const TIMEOUT_KEYS = ["ssh_wait", "stop"];

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

type Table = Record<string, unknown>;

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
  checkKeys(raw, TOP_KEYS, "", fail);

  if (raw.default_image_name !== undefined) {
    config.defaultImageName = nonEmptyString(raw.default_image_name, "default_image_name", fail);
  }
  if (raw.vmm !== undefined)
    config.vmm = oneOf(raw.vmm, ["auto", "qemu", "firecracker"] as const, "vmm", fail);
  if (raw.accel !== undefined)
    config.accel = oneOf(raw.accel, ["auto", "kvm", "tcg"] as const, "accel", fail);

  if (raw.console_log_size !== undefined) {
    const bytes = size(raw.console_log_size, "console_log_size", fail);
    if (bytes < 64 * 1024 || bytes > 1024 ** 3)
      fail("console_log_size", `${String(raw.console_log_size)} must be from 64K to 1G`);
    config.consoleLogBytes = bytes;
  }

  if (raw.vm_defaults !== undefined) {
    const t = table(raw.vm_defaults, "vm_defaults", fail);
    checkKeys(t, VM_DEFAULT_KEYS, "vm_defaults.", fail);
    if (t.vcpu !== undefined)
      config.vmDefaults.vcpu = wholeNumber(
        t.vcpu,
        [1, maxVcpu(host)],
        "vm_defaults.vcpu",
        `must be a whole number from 1 to ${maxVcpu(host)} (${VCPU_OVERCOMMIT}x this host's ${host.cpus} CPUs, at most ${MAX_VCPU})`,
        fail,
      );
    const bounded = (what: "memory" | "disk", bytes: number, key: string): number => {
      const problem = vmShapeProblem(what, bytes, host);
      return problem === null ? bytes : fail(key, problem);
    };
    if (t.memory !== undefined)
      config.vmDefaults.memoryBytes = bounded(
        "memory",
        size(t.memory, "vm_defaults.memory", fail),
        "vm_defaults.memory",
      );
    if (t.disk_size !== undefined)
      config.vmDefaults.diskBytes = bounded(
        "disk",
        size(t.disk_size, "vm_defaults.disk_size", fail),
        "vm_defaults.disk_size",
      );
  }

  if (raw.network !== undefined) {
    const t = table(raw.network, "network", fail);
    checkKeys(t, NETWORK_KEYS, "network.", fail);
    if (t.bridge !== undefined) {
      const bridge = nonEmptyString(t.bridge, "network.bridge", fail);
      // banger creates, changes and removes its bridge: it only ever touches devices it owns.
      if (!bridge.startsWith("banger"))
        fail(
          "network.bridge",
          `${JSON.stringify(bridge)} does not start with "banger": banger only manages its own devices (e.g. "banger1")`,
        );
      if (!/^banger[A-Za-z0-9_-]{0,9}$/.test(bridge)) {
        fail(
          "network.bridge",
          `${JSON.stringify(bridge)} is not a valid interface name ("banger" then up to 9 letters, digits, '-' or '_'; 15 at most)`,
        );
      }
      config.network.bridge = bridge;
    }
    if (t.subnet !== undefined) config.network.subnet = subnet(t.subnet, fail);
    if (t.dns_port !== undefined)
      config.network.dnsPort = wholeNumber(
        t.dns_port,
        [1, 65535],
        "network.dns_port",
        "must be a port number from 1 to 65535",
        fail,
      );
    if (t.tap_pool_size !== undefined)
      config.network.tapPoolSize = wholeNumber(
        t.tap_pool_size,
        [0, 64],
        "network.tap_pool_size",
        "must be a whole number from 0 (no pool) to 64",
        fail,
      );
    if (t.helper_socket !== undefined) {
      const socket = nonEmptyString(t.helper_socket, "network.helper_socket", fail);
      if (!socket.startsWith("/"))
        fail("network.helper_socket", `"${socket}" must be an absolute path`);
      config.network.helperSocket = socket;
    }
  }

  if (raw.file_sync !== undefined) {
    if (!Array.isArray(raw.file_sync))
      fail("file_sync", "must be an array of tables: [[file_sync]]");
    (raw.file_sync as unknown[]).forEach((entry, i) => {
      const where = `file_sync[${i}]`;
      const t = table(entry, where, fail);
      checkKeys(t, FILE_SYNC_KEYS, `${where}.`, fail);
      if (t.host === undefined) fail(where, "missing host");
      if (t.guest === undefined) fail(where, "missing guest");
      const host = nonEmptyString(t.host, `${where}.host`, fail);
      const guest = nonEmptyString(t.guest, `${where}.guest`, fail);
      checkPath(host, `${where}.host`, fail);
      checkPath(guest, `${where}.guest`, fail);
      if (!(host.startsWith("~/") || host.startsWith("/"))) {
        fail(`${where}.host "${host}"`, "host path must start with ~/ or / (absolute)");
      }
      if (!(guest.startsWith("~/") || guest.startsWith("/root/"))) {
        fail(`${where}.guest "${guest}"`, "guest path must be under ~/ or /root/");
      }
      let mode: number | null = null;
      if (t.mode !== undefined) {
        if (typeof t.mode !== "string" || !/^0?[0-7]{3}$/.test(t.mode)) {
          fail(
            `${where}.mode`,
            `${JSON.stringify(t.mode)} must be an octal string such as "0600" or "644"`,
          );
        }
        mode = Number.parseInt(t.mode as string, 8);
      }
      config.fileSync.push({ host, guest, mode });
    });
  }

  if (raw.image !== undefined) {
    const t = table(raw.image, "image", fail);
    checkKeys(t, IMAGE_KEYS, "image.", fail);
    if (t.max_layer_size !== undefined)
      config.image.maxLayerBytes = size(t.max_layer_size, "image.max_layer_size", fail);
    if (t.max_image_size !== undefined)
      config.image.maxImageBytes = size(t.max_image_size, "image.max_image_size", fail);
    if (t.max_entries !== undefined)
      config.image.maxEntries = wholeNumber(
        t.max_entries,
        [1, 1_000_000_000],
        "image.max_entries",
        "must be a whole number from 1 to 1000000000",
        fail,
      );
  }

  if (raw.timeouts !== undefined) {
    const t = table(raw.timeouts, "timeouts", fail);
    checkKeys(t, TIMEOUT_KEYS, "timeouts.", fail);
    if (t.ssh_wait !== undefined)
      config.timeouts.sshWaitMs = duration(t.ssh_wait, [1, 3600], "timeouts.ssh_wait", fail);
    if (t.stop !== undefined)
      config.timeouts.stopMs = duration(t.stop, [1, 3600], "timeouts.stop", fail);
  }
  return config;
}

type Fail = (where: string, why: string) => never;

/** A whole number within [min, max], or a config error naming the key and the value given. */
function wholeNumber(
  v: unknown,
  [min, max]: [number, number],
  key: string,
  rule: string,
  fail: Fail,
): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    fail(key, `${JSON.stringify(v)} ${rule}`);
  return v as number;
}

/** Seconds as a whole number or "90s" / "2m", within [min, max] seconds; milliseconds out. */
function duration(v: unknown, [min, max]: [number, number], key: string, fail: Fail): number {
  const rule = `must be from ${min}s to ${max / 60}m: a whole number of seconds, or "90s" / "2m"`;
  let seconds: number | null = null;
  if (typeof v === "number" && Number.isInteger(v)) seconds = v;
  if (typeof v === "string") {
    const m = /^(\d{1,7})(s|m)$/.exec(v);
    if (m) seconds = Number(m[1]) * (m[2] === "m" ? 60 : 1);
  }
  // JSON.stringify would print inf and nan as "null".
  const shown = typeof v === "number" ? String(v) : JSON.stringify(v);
  if (seconds === null || seconds < min || seconds > max) fail(key, `${shown} ${rule}`);
  return (seconds as number) * 1000;
}

function checkKeys(t: Table, allowed: string[], prefix: string, fail: Fail): void {
  for (const key of Object.keys(t)) {
    if (allowed.includes(key)) continue;
    const guess = closest(key, allowed);
    fail(
      `${prefix}${key}`,
      `unknown key${guess ? ` (did you mean "${prefix}${guess}"?)` : `; known keys: ${allowed.join(", ")}`}`,
    );
  }
}

function table(v: unknown, where: string, fail: Fail): Table {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Date) {
    return fail(where, "must be a table");
  }
  return v as Table;
}

function nonEmptyString(v: unknown, where: string, fail: Fail): string {
  if (typeof v !== "string") return fail(where, `expected a string, got ${JSON.stringify(v)}`);
  if (v.trim() === "") return fail(where, "must not be empty");
  return v;
}

function oneOf<T extends string>(v: unknown, options: readonly T[], where: string, fail: Fail): T {
  if (typeof v === "string" && (options as readonly string[]).includes(v)) return v as T;
  return fail(where, `${JSON.stringify(v)} must be one of: ${options.join(", ")}`);
}

function size(v: unknown, where: string, fail: Fail): number {
  // A bare integer means MiB, like on the command line.
  if (typeof v === "number" || typeof v === "bigint") {
    if (!Number.isInteger(Number(v)) || Number(v) <= 0)
      return fail(where, `${String(v)} must be a positive size`);
    const bytes = Number(v) * 1024 * 1024;
    if (!Number.isSafeInteger(bytes)) return fail(where, `${String(v)} MiB is too large`);
    return bytes;
  }
  if (typeof v !== "string")
    return fail(where, `expected a size like "8G", got ${JSON.stringify(v)}`);
  try {
    return parseSize(v);
  } catch (err) {
    return fail(where, (err as Error).message);
  }
}

function subnet(v: unknown, fail: Fail): string {
  const text = nonEmptyString(v, "network.subnet", fail);
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  if (!m || octets.some((o) => o > 255))
    return fail("network.subnet", `"${text}" is not an IPv4 CIDR like 172.30.0.0/24`);
  const prefix = Number(m[5]);
  if (prefix < 16 || prefix > 29)
    return fail("network.subnet", `prefix /${prefix} must be between /16 and /29`);
  const [a, b] = octets as [number, number, number, number];
  // Guests get addresses from it and the host routes it to the bridge: a public range would
  // shadow real hosts on the internet.
  const rfc1918 = a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
  if (!rfc1918)
    return fail(
      "network.subnet",
      `"${text}" is not a private range; use one inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16`,
    );
  const addr = octets.reduce((n, o) => n * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  if (addr % size !== 0) {
    const net = addr - (addr % size);
    const dotted = [24, 16, 8, 0].map((s) => Math.floor(net / 2 ** s) % 256).join(".");
    return fail("network.subnet", `"${text}" has host bits set; did you mean ${dotted}/${prefix}?`);
  }
  return text;
}

function checkPath(p: string, where: string, fail: Fail): void {
  if (/^~[^/]/.test(p))
    fail(`${where} "${p}"`, "~user/ paths are not supported; use ~/ or an absolute path");
  if (p.split("/").includes("..")) fail(`${where} "${p}"`, "must not contain '..'");
  if (p === "~/" || p === "/" || p === "/root/")
    fail(`${where} "${p}"`, "must name a file or directory, not a root");
}

/** The allowed key within edit distance 2, if any. */
function closest(key: string, options: string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const option of options) {
    const d = editDistance(key.toLowerCase(), option);
    if (d < bestDistance) {
      best = option;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
