import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";

/**
 * A kernel in banger's store is a directory with fixed names:
 *   vmlinux (ELF, Firecracker) and/or vmlinuz (bzImage, QEMU), initrd.img,
 *   modules/ (optional), config (optional), manifest.json.
 */
export const KERNEL_FILES = {
  vmlinux: "vmlinux",
  vmlinuz: "vmlinuz",
  initrd: "initrd.img",
  modules: "modules",
  config: "config",
} as const;

export const KernelManifest = z.object({
  name: z.string(),
  version: z.string().nullable(),
  source: z.string(),
  /** sha256 of the boot image (vmlinuz when present, else vmlinux). */
  sha256: z.string(),
  /** Kernel command line this kernel + initrd expect, before banger adds per-VM parts. */
  cmdline: z.string(),
  files: z.object({
    vmlinux: z.string().nullable(),
    vmlinuz: z.string().nullable(),
    initrd: z.string().nullable(),
    modules: z.string().nullable(),
  }),
  createdAt: z.string(),
});
export type KernelManifest = z.infer<typeof KernelManifest>;

/** What the kernel + banger's initramfs expect on the command line; the VM adds root= and banger.* parts. */
export const DEFAULT_KERNEL_CMDLINE = "console=ttyS0 reboot=t panic=-1 rw";

export const KERNEL_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function checkKernelName(name: string): void {
  if (!KERNEL_NAME.test(name)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid kernel name "${name}"`,
      "use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit (at most 63)",
    );
  }
}

export interface DiscoveredKernel {
  vmlinux: string | null;
  vmlinuz: string | null;
  initrd: string | null;
  modules: string | null;
  config: string | null;
  version: string | null;
  cmdline: string | null;
}

const SourceMetadata = z
  .object({
    version: z.string().optional(),
    kernel_version: z.string().optional(),
    cmdline: z.string().optional(),
    vmlinux: z.string().optional(),
    vmlinuz: z.string().optional(),
    kernel: z.string().optional(),
    initrd: z.string().optional(),
    modules: z.string().optional(),
    config: z.string().optional(),
  })
  .passthrough();

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(
    () => true,
    () => false,
  );
}

/** Is this file an ELF image (vmlinux) rather than a bzImage? */
async function isElf(file: string): Promise<boolean> {
  const handle = await fsp.open(file, "r");
  try {
    const buf = Buffer.alloc(4);
    await handle.read(buf, 0, 4, 0);
    return buf.readUInt32BE(0) === 0x7f454c46;
  } finally {
    await handle.close();
  }
}

/**
 * Finds the kernel pieces in a directory: metadata.json (or manifest.json)
 * names them first; otherwise well-known file names and globs.
 */
export async function discoverKernel(dir: string): Promise<DiscoveredKernel> {
  const found: DiscoveredKernel = {
    vmlinux: null,
    vmlinuz: null,
    initrd: null,
    modules: null,
    config: null,
    version: null,
    cmdline: null,
  };
  const entries = await fsp.readdir(dir).catch(() => {
    throw new BangerError(
      ErrorCode.NotFound,
      `kernel directory ${dir} does not exist or cannot be read`,
    );
  });
  const within = (rel: string, key: string) => {
    const resolved = path.resolve(dir, rel);
    if (!resolved.startsWith(path.resolve(dir) + path.sep)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `metadata.json ${key} "${rel}" points outside ${dir}`,
      );
    }
    return resolved;
  };

  for (const metaName of ["metadata.json", "manifest.json"]) {
    if (!entries.includes(metaName)) continue;
    const raw = JSON.parse(await fsp.readFile(path.join(dir, metaName), "utf8")) as unknown;
    const meta = SourceMetadata.parse(raw);
    const files = (raw as { files?: Record<string, string | null> }).files ?? {};
    const pick = (key: string): string | null => {
      const value = (meta as Record<string, unknown>)[key] ?? files[key];
      return typeof value === "string" ? within(value, key) : null;
    };
    found.vmlinux = pick("vmlinux");
    found.vmlinuz = pick("vmlinuz");
    const kernel = pick("kernel");
    if (kernel) {
      if (await isElf(kernel)) found.vmlinux ??= kernel;
      else found.vmlinuz ??= kernel;
    }
    found.initrd = pick("initrd");
    found.modules = pick("modules");
    found.config = pick("config");
    found.version = meta.version ?? meta.kernel_version ?? null;
    found.cmdline = meta.cmdline ?? null;
    break;
  }

  const firstMatch = (patterns: RegExp[]) => {
    for (const pattern of patterns) {
      const hit = entries.filter((e) => pattern.test(e)).sort()[0];
      if (hit) return path.join(dir, hit);
    }
    return null;
  };
  found.vmlinux ??= firstMatch([/^vmlinux$/, /^vmlinux-.+/]);
  found.vmlinuz ??= firstMatch([/^vmlinuz$/, /^vmlinuz-.+/, /^bzImage$/]);
  found.initrd ??= firstMatch([/^initrd\.img$/, /^initrd\.img-.+/, /^initramfs.*/, /^initrd.*/]);
  found.config ??= firstMatch([/^config$/, /^config-.+/]);
  if (!found.modules) {
    if (entries.includes("modules") && (await fsp.stat(path.join(dir, "modules"))).isDirectory())
      found.modules = path.join(dir, "modules");
    else if (await exists(path.join(dir, "lib", "modules")))
      found.modules = path.join(dir, "lib", "modules");
  }
  // A file named vmlinux may really be a bzImage and vice versa: trust the bytes.
  if (found.vmlinux && !(await isElf(found.vmlinux))) {
    found.vmlinuz ??= found.vmlinux;
    found.vmlinux = null;
  }
  if (found.vmlinuz && (await isElf(found.vmlinuz))) {
    found.vmlinux ??= found.vmlinuz;
    found.vmlinuz = null;
  }
  found.version ??= versionFromName(found.vmlinuz ?? found.vmlinux ?? "");
  if (!found.vmlinux && !found.vmlinuz) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `no kernel found in ${dir}`,
      "expected vmlinux or vmlinuz (or vmlinuz-<version>, bzImage), or a metadata.json naming it",
    );
  }
  return found;
}

function versionFromName(file: string): string | null {
  const m = /^vmlinu[xz]-(.+)$/.exec(path.basename(file));
  return m?.[1] ?? null;
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Validates a kernel directory in banger's layout (after a bundle extraction or import). */
export async function readKernelDir(dir: string): Promise<{
  vmlinux: string | null;
  vmlinuz: string | null;
  initrd: string | null;
  modules: string | null;
}> {
  const at = async (name: string) =>
    (await exists(path.join(dir, name))) ? path.join(dir, name) : null;
  const result = {
    vmlinux: await at(KERNEL_FILES.vmlinux),
    vmlinuz: await at(KERNEL_FILES.vmlinuz),
    initrd: await at(KERNEL_FILES.initrd),
    modules: await at(KERNEL_FILES.modules),
  };
  if (!result.vmlinux && !result.vmlinuz) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `the bundle holds no kernel (vmlinux or vmlinuz)`,
      "the bundle is incomplete; nothing was installed",
    );
  }
  return result;
}

export async function writeManifest(dir: string, manifest: KernelManifest): Promise<void> {
  await fsp.writeFile(path.join(dir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
}

export async function readManifest(dir: string): Promise<KernelManifest | null> {
  try {
    return KernelManifest.parse(
      JSON.parse(await fsp.readFile(path.join(dir, "manifest.json"), "utf8")),
    );
  } catch {
    return null;
  }
}
