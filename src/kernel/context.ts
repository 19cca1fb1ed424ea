import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { KernelInfo } from "../api/methods.js";
import type { Layout } from "../paths/layout.js";
import type { KernelRow, Store } from "../store/store.js";
import type { CommandRunner } from "../system/runner.js";
import { publishDir } from "../util/bundle-fetch.js";
import { InflightByName } from "../util/wait.js";
import type { deriveDistroKernel } from "./debian.js";
import {
  DEFAULT_KERNEL_CMDLINE,
  readKernelDir,
  sha256File,
  writeManifest,
  type KernelManifest,
} from "./kernel-dir.js";

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

/** What every way of installing a kernel shares: one install per name, the manifest, publishing. */
export class KernelContext {
  /** One install per kernel name at a time; a second one fails fast instead of racing the first. */
  readonly inflight = new InflightByName();

  constructor(readonly deps: KernelServiceDeps) {}

  now(): string {
    return (this.deps.now?.() ?? new Date()).toISOString();
  }

  dirFor(name: string): string {
    return path.join(this.deps.layout.kernelsDir, name);
  }

  async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    if (this.inflight.get(name)) {
      throw new BangerError(
        ErrorCode.Busy,
        `kernel "${name}" is being installed right now`,
        "wait for it to finish, then retry",
      );
    }
    return await this.inflight.run(name, fn);
  }

  /** Refuses to overwrite unless forced; returns whether a row must be replaced. */
  checkReplace(name: string, force: boolean): boolean {
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

  async publish(
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

  async manifestFor(
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
}
