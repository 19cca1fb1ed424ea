import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { runChecked, type CommandRunner } from "../system/runner.js";
import {
  buildInitramfs,
  findStaticBusybox,
  indexModules,
  resolveModuleOrder,
  VIRTIO_MODULES,
} from "./initramfs.js";
import { loadGuestScripts } from "../guest/scripts.js";
import { KERNEL_FILES } from "./kernel-dir.js";
import { extractVmlinux } from "./vmlinux.js";

/** Meta-packages that track the distribution's current VM-friendly kernel, best first. */
export const KERNEL_META_PACKAGES = [
  "linux-image-cloud-amd64",
  "linux-image-kvm",
  "linux-image-virtual",
];

export interface DerivedKernel {
  version: string;
  package: string;
  modules: string[];
}

export interface DeriveDeps {
  runner: CommandRunner;
  /** Where to put the downloaded package and its unpacked tree (removed afterwards). */
  tmpRoot?: string;
  progress?: (stage: string, message?: string) => void;
  busybox?: () => Promise<Buffer>;
  /** guest-scripts/initramfs-init.sh; read when not given (once per derived kernel: it is rare). */
  initramfsInit?: string;
}

/** `apt-cache depends <meta>` → the real image package it points at. */
export function parseImageDependency(output: string): string | null {
  const m = /^\s*Depends:\s*(linux-image-[^\s<>]+)/m.exec(output);
  return m?.[1] ?? null;
}

/** Resolve the first meta-package apt knows to its current image package. */
export async function resolveKernelPackage(runner: CommandRunner): Promise<string> {
  for (const meta of KERNEL_META_PACKAGES) {
    const result = await runner.run("apt-cache", ["depends", meta], { timeoutMs: 60_000 });
    if (result.code !== 0) continue;
    const pkg = parseImageDependency(result.stdout);
    if (pkg) return pkg;
  }
  throw new BangerError(
    ErrorCode.Precondition,
    `apt knows none of ${KERNEL_META_PACKAGES.join(", ")}`,
    "run 'sudo apt-get update' (the package lists may be empty), or import a kernel with 'banger kernel import'",
  );
}

/**
 * Derives a bootable kernel from the distribution's cloud kernel package into
 * `outDir` (which must exist): vmlinuz, vmlinux (for Firecracker), config,
 * modules/ (just what the initramfs loads) and banger's initramfs.
 */
export async function deriveDistroKernel(outDir: string, deps: DeriveDeps): Promise<DerivedKernel> {
  const { runner } = deps;
  const progress = deps.progress ?? (() => {});
  const work = await fsp.mkdtemp(path.join(deps.tmpRoot ?? os.tmpdir(), "banger-kernel-"));
  try {
    progress("resolve", "asking apt for the cloud kernel package");
    const pkg = await resolveKernelPackage(runner);

    progress("download", pkg);
    const download = await runner.run("apt-get", ["download", pkg], {
      cwd: work,
      timeoutMs: 10 * 60_000,
    });
    const debs = (await fsp.readdir(work)).filter((f) => f.endsWith(".deb"));
    if (download.code !== 0 || debs.length === 0) {
      throw new BangerError(
        ErrorCode.Precondition,
        `apt-get download ${pkg} failed: ${download.stderr.trim().split("\n").slice(-3).join(" ")}`,
        "check that the Debian/Ubuntu package repositories are reachable, then retry",
      );
    }

    progress("unpack", debs[0]);
    const tree = path.join(work, "tree");
    await runChecked(runner, "dpkg-deb", ["-x", path.join(work, debs[0]!), tree], {
      timeoutMs: 5 * 60_000,
    });

    const boot = path.join(tree, "boot");
    const bootFiles = await fsp.readdir(boot).catch(() => [] as string[]);
    const vmlinuzName = bootFiles.find((f) => f.startsWith("vmlinuz-"));
    if (!vmlinuzName)
      throw new BangerError(ErrorCode.Precondition, `${pkg} holds no /boot/vmlinuz-*`);
    const version = vmlinuzName.slice("vmlinuz-".length);
    const vmlinuz = await fsp.readFile(path.join(boot, vmlinuzName));
    await fsp.writeFile(path.join(outDir, KERNEL_FILES.vmlinuz), vmlinuz);
    const configName = bootFiles.find((f) => f === `config-${version}`);
    if (configName)
      await fsp.copyFile(path.join(boot, configName), path.join(outDir, KERNEL_FILES.config));

    progress("vmlinux", "uncompressed ELF for Firecracker");
    await fsp.writeFile(path.join(outDir, KERNEL_FILES.vmlinux), extractVmlinux(vmlinuz));

    progress("initramfs", "busybox and virtio modules");
    let modulesRoot = path.join(tree, "lib", "modules", version);
    if (!(await fsp.stat(modulesRoot).catch(() => null)))
      modulesRoot = path.join(tree, "usr", "lib", "modules", version);
    const index = await indexModules(modulesRoot).catch(() => new Map<string, string>());
    const order = await resolveModuleOrder(VIRTIO_MODULES, index);
    const modules = await Promise.all(
      order.map(async (m) => ({ key: m.key, data: await fsp.readFile(m.file) })),
    );
    const busybox = await (deps.busybox ?? (() => findStaticBusybox()))();
    await fsp.writeFile(
      path.join(outDir, KERNEL_FILES.initrd),
      buildInitramfs({
        busybox,
        modules,
        init: deps.initramfsInit ?? loadGuestScripts().initramfsInit,
      }),
    );

    // Keep the modules the initramfs loads, in the kernel's own layout, for reference and re-packing.
    const kept = path.join(outDir, KERNEL_FILES.modules, version);
    for (const m of order) {
      const rel = path.relative(modulesRoot, m.file);
      await fsp.mkdir(path.dirname(path.join(kept, rel)), { recursive: true });
      await fsp.copyFile(m.file, path.join(kept, rel));
    }
    return { version, package: pkg, modules: order.map((m) => m.key) };
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}
