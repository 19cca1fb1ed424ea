import fsp from "node:fs/promises";
import path from "node:path";
import zlib from "node:zlib";
import { BangerError, ErrorCode } from "../api/errors.js";

/** The modules a microVM needs to reach its root disk, network and console, by module name. */
export const VIRTIO_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_mmio",
  "virtio_blk",
  "failover",
  "net_failover",
  "virtio_net",
  "virtio_console",
  "virtio-rng",
] as const;

/** Module names treat '-' and '_' alike. */
export const moduleKey = (name: string): string => name.replace(/-/g, "_");

/** `depends=a,b` from a module's .modinfo strings (NUL-separated key=value pairs). */
export function moduleDepends(ko: Buffer): string[] {
  const marker = Buffer.from("\0depends=");
  const at = ko.indexOf(marker);
  if (at < 0) return [];
  const start = at + marker.length;
  const end = ko.indexOf(0, start);
  const value = ko.toString("latin1", start, end < 0 ? undefined : end);
  return value.split(",").filter(Boolean);
}

/** Every `.ko` under a modules tree, by module key. */
export async function indexModules(modulesDir: string): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  const walk = async (dir: string) => {
    for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) await walk(full);
      else if (entry.name.endsWith(".ko")) index.set(moduleKey(entry.name.slice(0, -3)), full);
    }
  };
  await walk(modulesDir);
  return index;
}

export interface ResolvedModule {
  key: string;
  file: string;
}

/**
 * The wanted modules plus everything they depend on, dependencies first, as
 * the modules' own `depends=` data says. A wanted module the kernel has built
 * in (no .ko file) is simply not needed.
 */
export async function resolveModuleOrder(
  wanted: readonly string[],
  index: Map<string, string>,
  readModule: (file: string) => Promise<Buffer> = (f) => fsp.readFile(f),
): Promise<ResolvedModule[]> {
  const order: ResolvedModule[] = [];
  const state = new Map<string, "visiting" | "done">();
  const visit = async (key: string, from: string | null): Promise<void> => {
    if (state.get(key) === "done") return;
    if (state.get(key) === "visiting") {
      throw new BangerError(ErrorCode.InvalidParams, `module dependency cycle through ${key}`);
    }
    const file = index.get(key);
    if (!file) {
      if (from)
        throw new BangerError(
          ErrorCode.InvalidParams,
          `module ${from} depends on ${key}, which is missing from the kernel package`,
        );
      state.set(key, "done"); // built into the kernel
      return;
    }
    state.set(key, "visiting");
    for (const dep of moduleDepends(await readModule(file))) await visit(moduleKey(dep), key);
    state.set(key, "done");
    order.push({ key, file });
  };
  for (const name of wanted) await visit(moduleKey(name), null);
  return order;
}

/** Where the initramfs lists the modules its init loads, dependencies first, one per line. */
export const MODULE_LOAD_ORDER = "lib/modules/load-order";

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  linkTarget?: string;
}

/** The newc ("070701") cpio format the kernel unpacks for an initramfs. */
export function writeCpio(entries: CpioEntry[]): Buffer {
  const chunks: Buffer[] = [];
  let offset = 0;
  const push = (buf: Buffer) => {
    chunks.push(buf);
    offset += buf.length;
  };
  const pad = () => {
    const n = (4 - (offset % 4)) % 4;
    if (n) push(Buffer.alloc(n));
  };
  const hex = (n: number) => n.toString(16).padStart(8, "0");
  let ino = 1;
  for (const e of [...entries, { name: "TRAILER!!!", mode: 0 }] as CpioEntry[]) {
    const body =
      e.linkTarget !== undefined ? Buffer.from(e.linkTarget) : (e.data ?? Buffer.alloc(0));
    const name = Buffer.from(`${e.name}\0`);
    const fields = [ino++, e.mode, 0, 0, 1, 0, body.length, 0, 0, 0, 0, name.length, 0];
    push(Buffer.from(`070701${fields.map(hex).join("")}`, "latin1"));
    push(name);
    pad();
    push(body);
    pad();
  }
  return Buffer.concat(chunks);
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

export interface InitramfsInput {
  /** A statically linked busybox. */
  busybox: Buffer;
  modules: Array<{ key: string; data: Buffer }>;
  /**
   * guest-scripts/initramfs-init.sh: loads the listed modules, finds the root disk (bounded
   * wait), switch_root; on failure says why and powers off.
   */
  init: string;
}

/** Builds the gzip-compressed initramfs. */
export function buildInitramfs(input: InitramfsInput): Buffer {
  const entries: CpioEntry[] = [];
  for (const dir of [
    "bin",
    "dev",
    "lib",
    "lib/modules",
    "proc",
    "sys",
    "newroot",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
  ]) {
    entries.push({ name: dir, mode: S_IFDIR | 0o755 });
  }
  entries.push({ name: "bin/busybox", mode: S_IFREG | 0o755, data: input.busybox });
  entries.push({ name: "bin/sh", mode: S_IFLNK | 0o777, linkTarget: "busybox" });
  for (const m of input.modules)
    entries.push({ name: `lib/modules/${m.key}.ko`, mode: S_IFREG | 0o644, data: m.data });
  entries.push({
    name: MODULE_LOAD_ORDER,
    mode: S_IFREG | 0o644,
    data: Buffer.from(input.modules.map((m) => `${m.key}\n`).join("")),
  });
  entries.push({ name: "init", mode: S_IFREG | 0o755, data: Buffer.from(input.init) });
  return zlib.gzipSync(writeCpio(entries), { level: 6 });
}

/** Finds a static busybox on the host (Debian's busybox-static installs /bin/busybox). */
export async function findStaticBusybox(
  candidates = ["/bin/busybox", "/usr/bin/busybox"],
): Promise<Buffer> {
  for (const file of candidates) {
    const data = await fsp.readFile(file).catch(() => null);
    if (!data) continue;
    if (isStaticElf(data)) return data;
  }
  throw new BangerError(
    ErrorCode.Precondition,
    "no statically linked busybox found (needed for banger's initramfs)",
    "sudo apt-get install busybox-static",
  );
}

/** A 64-bit ELF without a PT_INTERP program header needs no dynamic loader. */
export function isStaticElf(data: Buffer): boolean {
  if (data.length < 64 || data.readUInt32BE(0) !== 0x7f454c46 || data[4] !== 2) return false;
  const phoff = Number(data.readBigUInt64LE(0x20));
  const phentsize = data.readUInt16LE(0x36);
  const phnum = data.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 > data.length) return false;
    if (data.readUInt32LE(at) === 3 /* PT_INTERP */) return false;
  }
  return true;
}
