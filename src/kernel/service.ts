import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { CatalogEntry, KernelDetail, KernelInfo } from "../api/methods.js";
import { existingOrMade } from "../util/wait.js";
import { loadKernelCatalog } from "./catalog.js";
import {
  KernelContext,
  kernelInfo,
  type KernelOpProgress,
  type KernelServiceDeps,
} from "./context.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { importKernelDir, importKernelFiles } from "./import.js";
import { readManifest, checkKernelName } from "./kernel-dir.js";
import { pullKernel } from "./pull.js";
import { dropSnapshotsOf } from "../snapshot/dependents.js";

export { kernelInfo, type KernelOpProgress, type KernelServiceDeps } from "./context.js";

export type CatalogListing = CatalogEntry;

/**
 * Kernels by name: catalog pulls and local derivation (pull.ts, derive.ts), imports
 * (import.ts), and their store rows.
 */
export class KernelService {
  private readonly ctx: KernelContext;

  constructor(deps: KernelServiceDeps) {
    this.ctx = new KernelContext(deps);
  }

  list(): KernelInfo[] {
    return this.ctx.deps.store.listKernels().map(kernelInfo);
  }

  async show(name: string): Promise<KernelDetail> {
    const row = this.ctx.deps.store.getKernel(name);
    if (!row) {
      throw new BangerError(
        ErrorCode.NotFound,
        `no kernel named ${JSON.stringify(name)}`,
        "'banger kernel list --available' shows what can be pulled",
      );
    }
    const manifest = await readManifest(row.dir);
    const files = manifest?.files ?? { vmlinux: null, vmlinuz: null, initrd: null, modules: null };
    const abs = (f: string | null) => (f ? path.join(row.dir, f) : null);
    return {
      ...kernelInfo(row),
      cmdline: manifest?.cmdline ?? null,
      files: {
        vmlinux: abs(files.vmlinux),
        vmlinuz: abs(files.vmlinuz),
        initrd: abs(files.initrd),
        modules: abs(files.modules),
      },
    };
  }

  async catalog(): Promise<CatalogListing[]> {
    const catalog = await loadKernelCatalog(this.ctx.deps.env);
    const pulled = new Set(this.ctx.deps.store.listKernels().map((k) => k.name));
    const listing: CatalogListing[] = catalog.entries.map((e) => ({
      name: e.name,
      state: pulled.has(e.name) ? "pulled" : "available",
      sizeBytes: e.size_bytes,
      description: e.description,
    }));
    if (!catalog.entries.some((e) => e.name === DISTRO_KERNEL_NAME)) {
      listing.push({
        name: DISTRO_KERNEL_NAME,
        state: pulled.has(DISTRO_KERNEL_NAME) ? "pulled" : "available",
        sizeBytes: null,
        description: "derived locally from this host's cloud kernel package (apt)",
      });
    }
    return listing.sort((a, b) => a.name.localeCompare(b.name));
  }

  async pull(
    name: string,
    opts: { force?: boolean; progress?: KernelOpProgress; signal?: AbortSignal } = {},
  ): Promise<KernelInfo> {
    checkKernelName(name);
    return this.ctx.exclusive(name, () => pullKernel(this.ctx, name, opts));
  }

  /** Copies a kernel directory into the store under banger's fixed names. */
  import(name: string, from: string): Promise<KernelInfo> {
    return importKernelDir(this.ctx, name, from);
  }

  /** Installs loose kernel files (`image register --kernel`); see importKernelFiles. */
  importFiles(
    name: string,
    files: { kernel: string; initrd?: string | undefined; modules?: string | undefined },
  ): Promise<KernelInfo> {
    return importKernelFiles(this.ctx, name, files);
  }

  /** The kernel a VM needs: the named one if present, else pulled (debian-cloud is derived locally). */
  async ensure(
    name: string,
    progress?: KernelOpProgress,
    signal?: AbortSignal,
  ): Promise<KernelInfo> {
    // A VM create that finds the kernel being derived by another waits for it (not Busy);
    // if that one fails, this one tries itself.
    return existingOrMade({
      existing: () => {
        const row = this.ctx.deps.store.getKernel(name);
        return row ? kernelInfo(row) : null;
      },
      inflight: () => this.ctx.inflight.get(name),
      waiting: () =>
        progress?.({
          stage: "wait",
          message: `kernel ${name} is being installed by another request`,
        }),
      make: () =>
        this.pull(name, { ...(progress ? { progress } : {}), ...(signal ? { signal } : {}) }),
      tooMany: (n) =>
        new BangerError(
          ErrorCode.Busy,
          `kernel "${name}" did not appear after ${n} installs by other requests`,
          `retry; 'banger kernel pull ${name}' shows why it fails`,
        ),
      signal,
    });
  }

  async delete(name: string, opts: { force?: boolean } = {}): Promise<{ deleted: string }> {
    const row = this.ctx.deps.store.getKernel(name);
    if (!row)
      throw new BangerError(
        ErrorCode.NotFound,
        `no kernel named ${JSON.stringify(name)}`,
        "'banger kernel list' shows what exists",
      );
    const users = this.ctx.deps.store.listImages().filter((i) => i.kernelRef === name);
    if (users.length > 0 && !opts.force) {
      throw new BangerError(
        ErrorCode.InvalidState,
        `kernel "${name}" is used by image(s) ${users.map((i) => i.name).join(", ")}`,
        `delete those images first, or use 'banger kernel delete ${name} --force'`,
      );
    }
    await dropSnapshotsOf(
      this.ctx.deps.store,
      this.ctx.deps.layout,
      { kind: "kernel", name },
      (s) => s.kernelRef === name,
    );
    this.ctx.deps.store.deleteKernel(name);
    await fsp.rm(row.dir, { recursive: true, force: true });
    return { deleted: name };
  }
}
