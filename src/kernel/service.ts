import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { KernelDetail, KernelInfo } from "../api/methods.js";
import type { Layout } from "../paths/layout.js";
import type { KernelRow, Store } from "../store/store.js";
import type { CommandRunner } from "../system/runner.js";
import { fetchBundleToStaging, publishDir, type FetchProgress } from "../util/bundle-fetch.js";
import { isKernelBundleMember } from "./bundle.js";
import { findCatalogEntry, loadKernelCatalog } from "./catalog.js";
import { deriveDistroKernel } from "./debian.js";
import { copyRegularFile } from "../util/regular-file.js";
import { existingOrMade } from "../util/wait.js";
import {
  checkKernelName,
  checkModulesDir,
  copyModulesTree,
  DEFAULT_KERNEL_CMDLINE,
  discoverKernel,
  isElf,
  KERNEL_FILES,
  readKernelDir,
  readManifest,
  sha256File,
  writeManifest,
  type DiscoveredKernel,
  type KernelManifest,
} from "./kernel-dir.js";

/** The kernel banger derives locally from the host distribution; needs no catalog. */
export const DISTRO_KERNEL_NAME = "debian-cloud";

// Far above any real piece (a Debian vmlinuz is ~8 MiB, vmlinux ~60 MiB, an initrd tens of
// MiB): the caps only stop a huge (or sparse) file from being copied byte by byte.
const MAX_KERNEL_BYTES = 512 * 1024 ** 2;
const MAX_INITRD_BYTES = 4 * 1024 ** 3;
const MAX_CONFIG_BYTES = 16 * 1024 ** 2;

/** The daemon's working directory is not the caller's: a relative path would name the wrong file. */
function checkAbsolute(p: string, what: string): void {
  if (!path.isAbsolute(p)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} ${JSON.stringify(p)} is not an absolute path`,
      "the CLI resolves paths for you; callers of the RPC must send absolute ones",
    );
  }
}

export interface KernelServiceDeps {
  store: Store;
  layout: Layout;
  env: NodeJS.ProcessEnv;
  runner: CommandRunner;
  now?: () => Date;
  /** Derivation seam: the real one runs apt-get and dpkg-deb. */
  deriveDistroKernel?: typeof deriveDistroKernel;
}

export interface KernelOpProgress {
  (report: { stage: string; message?: string; current?: number; total?: number }): void;
}

export interface CatalogListing {
  name: string;
  state: "pulled" | "available";
  sizeBytes: number | null;
  description: string;
}

export function kernelInfo(row: KernelRow): KernelInfo {
  return {
    name: row.name,
    version: row.version,
    source: row.source,
    dir: row.dir,
    sha256: row.sha256,
    createdAt: row.createdAt,
  };
}

/** Kernels by name: catalog pulls, local derivation, imports, and their store rows. */
export class KernelService {
  constructor(private readonly deps: KernelServiceDeps) {}

  private now(): string {
    return (this.deps.now?.() ?? new Date()).toISOString();
  }

  private dirFor(name: string): string {
    return path.join(this.deps.layout.kernelsDir, name);
  }

  list(): KernelInfo[] {
    return this.deps.store.listKernels().map(kernelInfo);
  }

  async show(name: string): Promise<KernelDetail> {
    const row = this.deps.store.getKernel(name);
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
    const catalog = await loadKernelCatalog(this.deps.env);
    const pulled = new Set(this.deps.store.listKernels().map((k) => k.name));
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

  /** Refuses to overwrite unless forced; returns whether a row must be replaced. */
  private checkReplace(name: string, force: boolean): boolean {
    const existing = this.deps.store.getKernel(name);
    if (existing && !force) {
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `kernel "${name}" is already present`,
        `use 'banger kernel pull ${name} --force' to replace it`,
      );
    }
    return existing !== null;
  }

  private async publish(
    name: string,
    staging: string,
    manifest: KernelManifest,
    replace: boolean,
  ): Promise<KernelInfo> {
    await writeManifest(staging, manifest);
    const dir = this.dirFor(name);
    await publishDir(staging, dir, { replace });
    const row: KernelRow = {
      name,
      version: manifest.version,
      source: manifest.source,
      dir,
      sha256: manifest.sha256,
      createdAt: manifest.createdAt,
    };
    if (replace) this.deps.store.deleteKernel(name);
    this.deps.store.insertKernel(row);
    return kernelInfo(row);
  }

  private async manifestFor(
    name: string,
    dir: string,
    source: string,
    version: string | null,
    cmdline: string | null,
  ): Promise<KernelManifest> {
    const files = await readKernelDir(dir);
    const rel = (p: string | null) => (p ? path.basename(p) : null);
    return {
      name,
      version,
      source,
      sha256: await sha256File((files.vmlinuz ?? files.vmlinux)!),
      cmdline: cmdline ?? DEFAULT_KERNEL_CMDLINE,
      files: {
        vmlinux: rel(files.vmlinux),
        vmlinuz: rel(files.vmlinuz),
        initrd: rel(files.initrd),
        modules: rel(files.modules),
      },
      createdAt: this.now(),
    };
  }

  /** One install per kernel name at a time; a second one fails fast instead of racing the first. */
  private readonly inflight = new Map<string, Promise<unknown>>();

  private async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (this.inflight.has(name)) {
      throw new BangerError(
        ErrorCode.Busy,
        `kernel "${name}" is being installed right now`,
        "wait for it to finish, then retry",
      );
    }
    // Registered before the first await: ensure() right after sees it and waits.
    const work = fn();
    this.inflight.set(name, work);
    try {
      return await work;
    } finally {
      this.inflight.delete(name);
    }
  }

  async pull(
    name: string,
    opts: { force?: boolean; progress?: KernelOpProgress; signal?: AbortSignal } = {},
  ): Promise<KernelInfo> {
    checkKernelName(name);
    return this.exclusive(name, () => this.pullUnlocked(name, opts));
  }

  private async pullUnlocked(
    name: string,
    opts: { force?: boolean; progress?: KernelOpProgress; signal?: AbortSignal },
  ): Promise<KernelInfo> {
    const replace = this.checkReplace(name, opts.force ?? false);
    const progress = opts.progress ?? (() => {});
    const catalog = await loadKernelCatalog(this.deps.env);
    const entry = findCatalogEntry(catalog, name);
    await fsp.mkdir(this.deps.layout.kernelsDir, { recursive: true });

    if (!entry) {
      if (name !== DISTRO_KERNEL_NAME) {
        const known = [...catalog.entries.map((e) => e.name), DISTRO_KERNEL_NAME].join(", ");
        throw new BangerError(
          ErrorCode.NotFound,
          `no kernel "${name}" in the catalog`,
          `available: ${known} ('banger kernel list --available')`,
        );
      }
      return this.derive(replace, progress);
    }

    const staging = await fetchBundleToStaging(
      { url: entry.tarball_url, sha256: entry.tarball_sha256, sizeBytes: entry.size_bytes },
      this.dirFor(name),
      {
        keep: isKernelBundleMember,
        validate: async (dir) => void (await readKernelDir(dir)),
        onProgress: (p: FetchProgress) =>
          progress({ stage: "download", message: name, current: p.current, total: p.total }),
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
    );
    try {
      progress({ stage: "install", message: name });
      const manifest = await this.manifestFor(
        name,
        staging,
        entry.tarball_url,
        entry.kernel_version,
        null,
      );
      return await this.publish(name, staging, manifest, replace);
    } finally {
      await fsp.rm(staging, { recursive: true, force: true });
    }
  }

  private async derive(replace: boolean, progress: KernelOpProgress): Promise<KernelInfo> {
    const staging = `${this.dirFor(DISTRO_KERNEL_NAME)}.staging-${randomBytes(4).toString("hex")}`;
    await fsp.mkdir(staging, { recursive: true });
    try {
      const derive = this.deps.deriveDistroKernel ?? deriveDistroKernel;
      const derived = await derive(staging, {
        runner: this.deps.runner,
        tmpRoot: this.deps.layout.kernelsDir,
        progress: (stage, message) => progress({ stage, ...(message ? { message } : {}) }),
      });
      const manifest = await this.manifestFor(
        DISTRO_KERNEL_NAME,
        staging,
        `apt:${derived.package}`,
        derived.version,
        null,
      );
      return await this.publish(DISTRO_KERNEL_NAME, staging, manifest, replace);
    } finally {
      await fsp.rm(staging, { recursive: true, force: true });
    }
  }

  /** Copies a kernel directory into the store under banger's fixed names. */
  async import(name: string, from: string): Promise<KernelInfo> {
    checkKernelName(name);
    checkAbsolute(from, "the kernel directory");
    return this.exclusive(name, () => this.importUnlocked(name, from));
  }

  private async importUnlocked(name: string, from: string): Promise<KernelInfo> {
    const replace = this.checkReplace(name, false);
    const found = await discoverKernel(path.resolve(from));
    // discoverKernel resolved the directory; every piece must stay inside it.
    return this.install(
      name,
      found,
      await fsp.realpath(from),
      `import:${path.resolve(from)}`,
      replace,
    );
  }

  /**
   * Installs loose kernel files the user named one by one (`image register --kernel`): each is
   * followed if it is a link (the user chose it), but must be a regular file (modules: a directory).
   */
  async importFiles(
    name: string,
    files: { kernel: string; initrd?: string | undefined; modules?: string | undefined },
  ): Promise<KernelInfo> {
    checkKernelName(name);
    checkAbsolute(files.kernel, "--kernel");
    if (files.initrd !== undefined) checkAbsolute(files.initrd, "--initrd");
    if (files.modules !== undefined) checkAbsolute(files.modules, "--modules");
    return this.exclusive(name, async () => {
      const replace = this.checkReplace(name, false);
      const kernel = path.resolve(files.kernel);
      const elf = await isElf(kernel, "kernel", null);
      const found = {
        vmlinux: elf ? kernel : null,
        vmlinuz: elf ? null : kernel,
        initrd: files.initrd ? path.resolve(files.initrd) : null,
        modules: files.modules ? await checkModulesDir(path.resolve(files.modules), null) : null,
        config: null,
        version: null,
        cmdline: null,
      };
      return this.install(name, found, null, `file:${kernel}`, replace);
    });
  }

  /** Copies the pieces into a staging dir under banger's fixed names, then publishes it. */
  private async install(
    name: string,
    found: DiscoveredKernel,
    within: string | null,
    source: string,
    replace: boolean,
  ): Promise<KernelInfo> {
    await fsp.mkdir(this.deps.layout.kernelsDir, { recursive: true });
    const staging = `${this.dirFor(name)}.staging-${randomBytes(4).toString("hex")}`;
    await fsp.mkdir(staging);
    const where = within === null ? { follow: true } : { within };
    const copy = (file: string | null, to: string, what: string, maxBytes: number) =>
      file
        ? copyRegularFile(file, path.join(staging, to), what, { ...where, maxBytes })
        : Promise.resolve();
    try {
      await copy(found.vmlinux, KERNEL_FILES.vmlinux, "kernel", MAX_KERNEL_BYTES);
      await copy(found.vmlinuz, KERNEL_FILES.vmlinuz, "kernel", MAX_KERNEL_BYTES);
      await copy(found.initrd, KERNEL_FILES.initrd, "initrd", MAX_INITRD_BYTES);
      await copy(found.config, KERNEL_FILES.config, "kernel config", MAX_CONFIG_BYTES);
      if (found.modules)
        await copyModulesTree(found.modules, path.join(staging, KERNEL_FILES.modules));
      const manifest = await this.manifestFor(name, staging, source, found.version, found.cmdline);
      return await this.publish(name, staging, manifest, replace);
    } finally {
      await fsp.rm(staging, { recursive: true, force: true });
    }
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
        const row = this.deps.store.getKernel(name);
        return row ? kernelInfo(row) : null;
      },
      inflight: () => this.inflight.get(name),
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
    const row = this.deps.store.getKernel(name);
    if (!row)
      throw new BangerError(
        ErrorCode.NotFound,
        `no kernel named ${JSON.stringify(name)}`,
        "'banger kernel list' shows what exists",
      );
    const users = this.deps.store.listImages().filter((i) => i.kernelRef === name);
    if (users.length > 0 && !opts.force) {
      throw new BangerError(
        ErrorCode.InvalidState,
        `kernel "${name}" is used by image(s) ${users.map((i) => i.name).join(", ")}`,
        `delete those images first, or use 'banger kernel delete ${name} --force'`,
      );
    }
    this.deps.store.deleteKernel(name);
    await fsp.rm(row.dir, { recursive: true, force: true });
    return { deleted: name };
  }
}
