import type { Config } from "./config.js";
import { MAX_VCPU, maxVcpu, VCPU_OVERCOMMIT, vmShapeProblem, type HostLimits } from "./limits.js";
import {
  checkKeys,
  checkPath,
  duration,
  nonEmptyString,
  oneOf,
  size,
  subnet,
  table,
  wholeNumber,
  type Fail,
  type Table,
} from "./values.js";

/** What each table of config.toml may hold, checked key by key into a Config. */

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

/** Overwrites `config`'s defaults with what the parsed file sets; the first bad key fails. */
export function applyConfigTables(raw: Table, config: Config, host: HostLimits, fail: Fail): void {
  checkKeys(raw, TOP_KEYS, "", fail);
  applyTopLevel(raw, config, fail);
  if (raw.vm_defaults !== undefined) applyVmDefaults(raw.vm_defaults, config, host, fail);
  if (raw.network !== undefined) applyNetwork(raw.network, config, fail);
  if (raw.file_sync !== undefined) applyFileSync(raw.file_sync, config, fail);
  if (raw.image !== undefined) applyImage(raw.image, config, fail);
  if (raw.timeouts !== undefined) applyTimeouts(raw.timeouts, config, fail);
}

function applyTopLevel(raw: Table, config: Config, fail: Fail): void {
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
}

function applyVmDefaults(value: unknown, config: Config, host: HostLimits, fail: Fail): void {
  const t = table(value, "vm_defaults", fail);
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

function applyNetwork(value: unknown, config: Config, fail: Fail): void {
  const t = table(value, "network", fail);
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

function applyFileSync(value: unknown, config: Config, fail: Fail): void {
  if (!Array.isArray(value)) fail("file_sync", "must be an array of tables: [[file_sync]]");
  (value as unknown[]).forEach((entry, i) => {
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

function applyImage(value: unknown, config: Config, fail: Fail): void {
  const t = table(value, "image", fail);
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

function applyTimeouts(value: unknown, config: Config, fail: Fail): void {
  const t = table(value, "timeouts", fail);
  checkKeys(t, TIMEOUT_KEYS, "timeouts.", fail);
  if (t.ssh_wait !== undefined)
    config.timeouts.sshWaitMs = duration(t.ssh_wait, [1, 3600], "timeouts.ssh_wait", fail);
  if (t.stop !== undefined)
    config.timeouts.stopMs = duration(t.stop, [1, 3600], "timeouts.stop", fail);
}
