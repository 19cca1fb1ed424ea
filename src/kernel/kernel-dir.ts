import { createHash } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";
import {
  copyRegularFile,
  describeKind,
  isInside,
  openRegularFile,
  readRegularFile,
} from "../util/regular-file.js";

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
      `invalid kernel name ${JSON.stringify(name)}`,
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

/** A metadata.json larger than this is not metadata. */
const MAX_METADATA_BYTES = 1024 * 1024;

/**
 * Is this file an ELF image (vmlinux) rather than a bzImage? Also the check that it is a regular
 * file (inside `within`, when given): a FIFO, a device or a link out of the source dir is refused.
 */
export async function isElf(file: string, what: string, within: string | null): Promise<boolean> {
  const { handle } = await openRegularFile(
    file,
    what,
    within === null ? { follow: true } : { within },
  );
  try {
    const buf = Buffer.alloc(4);
    const { bytesRead } = await handle.read(buf, 0, 4, 0);
    if (bytesRead === 0)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} ${file} is empty`,
        "give a kernel image",
      );
    return bytesRead === 4 && buf.readUInt32BE(0) === 0x7f454c46;
  } finally {
    await handle.close();
  }
}

/**
 * A modules tree must be a real directory, or a symlink that resolves to one inside `within`
 * (`modules -> /etc` is refused). Returns the resolved directory.
 */
export async function checkModulesDir(dir: string, within: string | null): Promise<string> {
  // A path the user named themselves (within === null) is followed: that is what they asked for.
  const real = await fsp.realpath(dir).catch(() => {
    throw new BangerError(ErrorCode.NotFound, `modules directory ${dir} does not exist`);
  });
  if (within !== null && !isInside(await fsp.realpath(within), real)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `modules directory ${dir} resolves to ${real}, outside ${within}`,
      `banger copies only what is inside ${within}; copy the modules there instead of linking to them`,
    );
  }
  const target = await fsp.stat(real);
  if (!target.isDirectory()) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `modules ${dir} is not a directory`,
      "give the kernel's modules tree (lib/modules/<version>) as a directory",
    );
  }
  return real;
}

/**
 * Finds the kernel pieces in a directory: metadata.json (or manifest.json)
 * names them first; otherwise well-known file names and globs.
 */
export async function discoverKernel(given: string): Promise<DiscoveredKernel> {
  // The user named this directory: follow it once; everything inside must stay inside.
  const dir = await fsp.realpath(given).catch(() => {
    throw new BangerError(ErrorCode.NotFound, `kernel directory ${given} does not exist`);
  });
  if (!(await fsp.stat(dir)).isDirectory()) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `kernel directory ${given} is not a directory`,
      "give the directory holding vmlinuz (or vmlinux) and initrd.img",
    );
  }
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
    const metaFile = path.join(dir, metaName);
    const text = (
      await readRegularFile(metaFile, metaName, { within: dir, maxBytes: MAX_METADATA_BYTES })
    ).toString("utf8");
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${metaFile} is not valid JSON: ${(err as Error).message}`,
        `fix or remove ${metaName}`,
      );
    }
    const parsed = SourceMetadata.safeParse(raw);
    if (!parsed.success) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${metaFile}: ${z.prettifyError(parsed.error)}`,
        `fix or remove ${metaName}`,
      );
    }
    const meta = parsed.data;
    const rawFiles = (raw as { files?: unknown }).files;
    const files = (typeof rawFiles === "object" && rawFiles !== null ? rawFiles : {}) as Record<
      string,
      unknown
    >;
    const pick = (key: string): string | null => {
      const value = (meta as Record<string, unknown>)[key] ?? files[key];
      return typeof value === "string" ? within(value, key) : null;
    };
    found.vmlinux = pick("vmlinux");
    found.vmlinuz = pick("vmlinuz");
    const kernel = pick("kernel");
    if (kernel) {
      if (await isElf(kernel, "kernel", dir)) found.vmlinux ??= kernel;
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
    if (entries.includes("modules")) found.modules = path.join(dir, "modules");
    else if (await exists(path.join(dir, "lib", "modules")))
      found.modules = path.join(dir, "lib", "modules");
  }
  if (found.modules) found.modules = await checkModulesDir(found.modules, dir);
  // A file named vmlinux may really be a bzImage and vice versa: trust the bytes.
  if (found.vmlinux && !(await isElf(found.vmlinux, "kernel", dir))) {
    found.vmlinuz ??= found.vmlinux;
    found.vmlinux = null;
  }
  if (found.vmlinuz && (await isElf(found.vmlinuz, "kernel", dir))) {
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

/** A modules tree deeper than this is not a modules tree. */
const MAX_MODULES_DEPTH = 32;

/**
 * Copies a modules tree entry by entry without following anything out of it: regular files are
 * copied, symlinks that resolve inside the tree are recreated as relative links, symlinks that
 * leave it (Debian's `build -> /usr/src/...`) are skipped, and FIFOs, devices and sockets are refused.
 */
export async function copyModulesTree(src: string, dest: string): Promise<void> {
  const root = await fsp.realpath(src);
  const walk = async (rel: string, depth: number): Promise<void> => {
    if (depth > MAX_MODULES_DEPTH) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `modules tree ${src} is nested more than ${MAX_MODULES_DEPTH} levels deep`,
      );
    }
    await fsp.mkdir(path.join(dest, rel), { mode: 0o755 });
    for (const entry of await fsp.readdir(path.join(root, rel), { withFileTypes: true })) {
      const childRel = path.join(rel, entry.name);
      const from = path.join(root, childRel);
      const to = path.join(dest, childRel);
      if (entry.isDirectory()) {
        await walk(childRel, depth + 1);
      } else if (entry.isFile()) {
        await copyRegularFile(from, to, "module file", { within: root });
      } else if (entry.isSymbolicLink()) {
        const target = await fsp.realpath(from).catch(() => null);
        if (target === null || !isInside(root, target)) continue; // dangling or leaves the tree
        const inTree = path.join(dest, path.relative(root, target));
        await fsp.symlink(path.relative(path.dirname(to), inTree), to);
      } else {
        const stat = await fsp.lstat(from);
        throw new BangerError(
          ErrorCode.InvalidParams,
          `${from} in the modules tree is ${describeKind(stat)}`,
          "a modules tree holds only files, directories and links; remove it and retry",
        );
      }
    }
  };
  await walk("", 0);
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
