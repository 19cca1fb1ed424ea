import { randomBytes } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import type { KernelService } from "../kernel/service.js";
import { DISTRO_KERNEL_NAME } from "../kernel/service.js";
import type { Layout } from "../paths/layout.js";
import type { ImageRow, Store } from "../store/store.js";
import type { CommandRunner } from "../system/runner.js";
import { fetchBundleToStaging, publishDir } from "../util/bundle-fetch.js";
import { BundleEntryBase, loadCatalog } from "../util/catalog.js";
import { removeTree } from "../util/remove-tree.js";
import { existingOrMade } from "../util/wait.js";
import { bootstrapDebian } from "./build/debian.js";
import { loadConfig } from "../config/config.js";
import { finaliseImage } from "./finalise.js";
import type { ImageLimits } from "./limits.js";

export const DEFAULT_IMAGE_NAME = "debian-bookworm";
export const IMAGE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export const ImageCatalogEntry = BundleEntryBase.extend({ kernel_ref: z.string() });
export type ImageCatalogEntry = z.infer<typeof ImageCatalogEntry>;

/** manifest.json inside an image bundle and next to every managed rootfs. */
export const ImageManifest = z.object({
  name: z.string(),
  kernel_ref: z.string().nullable(),
  source: z.string().nullable().optional(),
  distro: z.string().optional(),
  arch: z.string().optional(),
  size_bytes: z.number().int().optional(),
});
export type ImageManifest = z.infer<typeof ImageManifest>;

export type Progress = (report: {
  stage: string;
  message?: string;
  current?: number;
  total?: number;
}) => void;

export interface PullRequest {
  ref: string;
  name?: string | undefined;
  kernelRef?: string | undefined;
  sizeBytes?: number | undefined;
  insecureRegistry?: boolean | undefined;
}

/** The OCI side of `image pull`: resolve a reference and fetch its layers (oldest first) into local files. */
export interface OciPuller {
  /** Default local name for a reference, e.g. debian:bookworm → debian-bookworm. */
  defaultName(ref: string): string;
  fetchLayers(
    req: PullRequest,
    progress: Progress,
    signal: AbortSignal | undefined,
    limits: ImageLimits,
  ): Promise<{ digest: string; canonical: string; layers: string[] }>;
}

export interface ImageServiceDeps {
  store: Store;
  layout: Layout;
  env: NodeJS.ProcessEnv;
  runner: CommandRunner;
  kernels: KernelService;
  oci: OciPuller;
  isRoot?: boolean;
  now?: () => Date;
}

export function imageInfo(row: ImageRow): ImageInfo {
  return {
    id: row.id,
    name: row.name,
    kernel: row.kernelRef,
    rootfsPath: row.rootfsPath,
    source: row.source,
    digest: row.digest,
    sizeBytes: row.sizeBytes,
    managed: row.managed,
    createdAt: row.createdAt,
  };
}

export function checkImageName(name: string): void {
  if (!IMAGE_NAME.test(name)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid image name ${JSON.stringify(name)}`,
      "use lower-case letters, digits, '.', '_' and '-' (at most 63), e.g. debian-bookworm",
    );
  }
}

/** ext4 superblock magic 0xEF53 at byte 1080. */
async function isExt4(file: string): Promise<boolean> {
  const handle = await fsp.open(file, "r").catch(() => null);
  if (!handle) return false;
  try {
    const buf = Buffer.alloc(2);
    await handle.read(buf, 0, 2, 1080);
    return buf.readUInt16LE(0) === 0xef53;
  } finally {
    await handle.close();
  }
}

/** Images: the locally built default, OCI pulls, catalog bundles, registered files. */
export class ImageService {
  /** Builds and pulls in flight, by image name: a second one for the name waits or is refused. */
  private readonly inflight = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: ImageServiceDeps) {}

  /** The [image] bounds from config.toml, read per operation like the rest of the config. */
  private async limits(): Promise<ImageLimits> {
    return (await loadConfig(this.deps.layout.configFile)).image;
  }

  private now(): string {
    return (this.deps.now?.() ?? new Date()).toISOString();
  }

  list(): ImageInfo[] {
    return this.deps.store.listImages().map(imageInfo);
  }

  private row(name: string): ImageRow {
    const row = this.deps.store.getImageByName(name);
    if (!row)
      throw new BangerError(
        ErrorCode.NotFound,
        `no image named ${JSON.stringify(name)}`,
        "'banger image list' shows what exists",
      );
    return row;
  }

  show(name: string): ImageInfo {
    return imageInfo(this.row(name));
  }

  /** One build/pull per image name at a time, and never over an existing name. */
  private async exclusive<T>(name: string, fn: () => Promise<T>): Promise<T> {
    checkImageName(name);
    if (this.inflight.has(name)) {
      throw new BangerError(
        ErrorCode.Busy,
        `image "${name}" is being created right now`,
        "wait for it to finish",
      );
    }
    if (this.deps.store.getImageByName(name)) {
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `an image named "${name}" already exists`,
        `delete it first ('banger image delete ${name}') or pick another --name`,
      );
    }
    // Registered before the first await: a caller that checks right after sees it.
    const work = fn();
    this.inflight.set(name, work);
    try {
      return await work;
    } finally {
      this.inflight.delete(name);
    }
  }

  /**
   * Builds under images/<id>.staging, publishes by rename, then writes the row.
   * Any failure removes the staging dir: no half-written image is ever visible.
   */
  private async create(
    name: string,
    work: (staging: string) => Promise<{
      rootfs: string;
      sizeBytes: number;
      source: string;
      digest: string | null;
      kernelRef: string;
    }>,
  ): Promise<ImageInfo> {
    const id = randomBytes(6).toString("hex");
    const finalDir = path.join(this.deps.layout.imagesDir, id);
    const staging = `${finalDir}.staging`;
    await fsp.mkdir(staging, { recursive: true });
    try {
      const made = await work(staging);
      const manifest: ImageManifest = {
        name,
        kernel_ref: made.kernelRef,
        source: made.source,
        size_bytes: made.sizeBytes,
      };
      await fsp.writeFile(
        path.join(staging, "manifest.json"),
        `${JSON.stringify(manifest, null, 2)}\n`,
      );
      // Only the image itself goes live; work files (layers, tarballs) stay behind and are removed.
      for (const entry of await fsp.readdir(staging)) {
        if (entry !== "rootfs.ext4" && entry !== "manifest.json")
          await removeTree(path.join(staging, entry));
      }
      await publishDir(staging, finalDir, { replace: false });
      const row: ImageRow = {
        id,
        name,
        kernelRef: made.kernelRef,
        rootfsPath: path.join(finalDir, "rootfs.ext4"),
        source: made.source,
        digest: made.digest,
        sizeBytes: made.sizeBytes,
        managed: true,
        createdAt: this.now(),
      };
      try {
        this.deps.store.insertImage(row);
      } catch (err) {
        await fsp.rm(finalDir, { recursive: true, force: true });
        throw err;
      }
      return imageInfo(row);
    } finally {
      await removeTree(staging);
    }
  }

  async build(
    opts: {
      name?: string | undefined;
      suite?: string | undefined;
      packages?: string[] | undefined;
      sizeBytes?: number | undefined;
    },
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    const name = opts.name ?? DEFAULT_IMAGE_NAME;
    const suite = opts.suite ?? "bookworm";
    return this.exclusive(name, async () => {
      const limits = await this.limits();
      return this.create(name, async (staging) => {
        const tarball = path.join(staging, "rootfs.tar");
        progress({ stage: "bootstrap", message: `mmdebstrap ${suite} (a few minutes)` });
        await bootstrapDebian({
          suite,
          extraPackages: opts.packages ?? [],
          outputTar: tarball,
          runner: this.deps.runner,
          isRoot: this.deps.isRoot ?? process.getuid?.() === 0,
          mirror: this.deps.env.BANGER_DEBIAN_MIRROR,
          progress: (message) => progress({ stage: "bootstrap", message }),
          ...(signal ? { signal } : {}),
        });
        const result = await finaliseImage({
          layers: [tarball],
          stagingDir: staging,
          sizeBytes: opts.sizeBytes,
          limits,
          runner: this.deps.runner,
          progress: (stage, message) => progress({ stage, ...(message ? { message } : {}) }),
        });
        return {
          rootfs: result.rootfs,
          sizeBytes: result.sizeBytes,
          source: `mmdebstrap:${suite}`,
          digest: null,
          kernelRef: DISTRO_KERNEL_NAME,
        };
      });
    });
  }

  /** A catalog name fetches its bundle; anything else is an OCI reference. */
  async pull(
    req: PullRequest,
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    const catalog = await loadCatalog(
      "image",
      ImageCatalogEntry,
      this.deps.env,
      "BANGER_IMAGE_CATALOG",
      "images.json",
    );
    const entry = catalog.entries.find((e) => e.name === req.ref);
    if (entry) return this.pullBundle(entry, req, progress, signal);
    const name = req.name ?? this.deps.oci.defaultName(req.ref);
    const limits = await this.limits();
    return this.exclusive(name, () =>
      this.create(name, async (staging) => {
        const fetched = await this.deps.oci.fetchLayers(req, progress, signal, limits);
        // Hardlink the cached layers into staging so a cache prune mid-pull cannot pull them away.
        const layers: string[] = [];
        for (const [i, layer] of fetched.layers.entries()) {
          const local = path.join(staging, `layer-${i}`);
          await fsp.link(layer, local).catch(() => fsp.copyFile(layer, local));
          layers.push(local);
        }
        const result = await finaliseImage({
          layers,
          stagingDir: staging,
          sizeBytes: req.sizeBytes,
          limits,
          runner: this.deps.runner,
          progress: (stage, message) => progress({ stage, ...(message ? { message } : {}) }),
        });
        return {
          rootfs: result.rootfs,
          sizeBytes: result.sizeBytes,
          source: fetched.canonical,
          digest: fetched.digest,
          kernelRef: req.kernelRef ?? DISTRO_KERNEL_NAME,
        };
      }),
    );
  }

  private async pullBundle(
    entry: ImageCatalogEntry,
    req: PullRequest,
    progress: Progress,
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    const name = req.name ?? entry.name;
    return this.exclusive(name, () =>
      this.create(name, async (staging) => {
        const fetched = await fetchBundleToStaging(
          { url: entry.tarball_url, sha256: entry.tarball_sha256, sizeBytes: entry.size_bytes },
          path.join(staging, "bundle"),
          {
            keep: (m) => m === "rootfs.ext4" || m === "manifest.json",
            validate: async (dir, files) => {
              if (
                !files.includes("rootfs.ext4") ||
                !(await isExt4(path.join(dir, "rootfs.ext4")))
              ) {
                throw new BangerError(
                  ErrorCode.InvalidParams,
                  `bundle for "${entry.name}" has no ext4 rootfs.ext4`,
                  "the bundle is broken; nothing was installed",
                );
              }
            },
            onProgress: (p) =>
              progress({
                stage: "download",
                message: entry.name,
                current: p.current,
                total: p.total,
              }),
            ...(signal ? { signal } : {}),
          },
        );
        let manifest: ImageManifest | null = null;
        try {
          manifest = ImageManifest.parse(
            JSON.parse(await fsp.readFile(path.join(fetched, "manifest.json"), "utf8")),
          );
        } catch {
          manifest = null;
        }
        await fsp.rename(path.join(fetched, "rootfs.ext4"), path.join(staging, "rootfs.ext4"));
        await fsp.rm(fetched, { recursive: true, force: true });
        const sizeBytes = (await fsp.stat(path.join(staging, "rootfs.ext4"))).size;
        const kernelRef = req.kernelRef ?? manifest?.kernel_ref ?? entry.kernel_ref;
        return {
          rootfs: path.join(staging, "rootfs.ext4"),
          sizeBytes,
          source: entry.tarball_url,
          digest: `sha256:${entry.tarball_sha256}`,
          kernelRef,
        };
      }),
    );
  }

  /** Registers an existing ext4 file in place (unmanaged: banger never deletes the file). */
  async register(req: {
    name: string;
    rootfs: string;
    kernelRef?: string | undefined;
    kernel?: string | undefined;
    initrd?: string | undefined;
    modules?: string | undefined;
  }): Promise<ImageInfo> {
    if (req.kernelRef && (req.kernel || req.initrd || req.modules)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        "--kernel-ref and --kernel/--initrd/--modules are mutually exclusive",
        "name a kernel banger has, or give the kernel files, not both",
      );
    }
    if (!req.kernelRef && !req.kernel) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        "register needs a kernel: --kernel-ref <name> or --kernel <file>",
        "'banger kernel list' shows the kernels banger has",
      );
    }
    if ((req.initrd || req.modules) && !req.kernel) {
      throw new BangerError(ErrorCode.InvalidParams, "--initrd and --modules go with --kernel");
    }
    const rootfs = path.resolve(req.rootfs);
    await this.checkRegisterable(rootfs);
    return this.exclusive(req.name, async () => {
      let kernelRef = req.kernelRef;
      if (kernelRef) {
        if (!this.deps.store.getKernel(kernelRef)) {
          throw new BangerError(
            ErrorCode.NotFound,
            `no kernel named ${JSON.stringify(kernelRef)}`,
            "'banger kernel list' shows what exists; 'banger kernel pull debian-cloud' gets the default",
          );
        }
      } else {
        // Loose kernel files become a kernel of their own, named after the image.
        kernelRef = `${req.name}-kernel`;
        // Each file is checked (regular, not a FIFO or device) as it is copied.
        await this.deps.kernels.importFiles(kernelRef, {
          kernel: req.kernel!,
          initrd: req.initrd,
          modules: req.modules,
        });
      }
      const row: ImageRow = {
        id: randomBytes(6).toString("hex"),
        name: req.name,
        kernelRef,
        rootfsPath: rootfs,
        source: `file:${rootfs}`,
        digest: null,
        sizeBytes: (await fsp.stat(rootfs)).size,
        managed: false,
        createdAt: this.now(),
      };
      this.deps.store.insertImage(row);
      return imageInfo(row);
    });
  }

  /**
   * `image register` takes a regular file holding a whole ext2/3/4 filesystem: the magic
   * alone is not one, and a FIFO or device must never be opened (a FIFO would block).
   */
  private async checkRegisterable(rootfs: string): Promise<void> {
    const refuse = (why: string, hint?: string) =>
      new BangerError(
        ErrorCode.InvalidParams,
        `cannot register ${rootfs}: ${why}`,
        hint ?? "give the path of an ext4 filesystem image file (e.g. made by mkfs.ext4)",
      );
    let stat: fs.Stats;
    try {
      stat = await fsp.stat(rootfs);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") throw refuse("no such file");
      if (code === "EACCES")
        throw refuse("permission denied", "the daemon must be able to read the file");
      if (code === "ELOOP") throw refuse("too many levels of symlinks");
      throw refuse(`cannot stat it (${code ?? String(err)})`);
    }
    if (stat.isDirectory()) throw refuse("it is a directory, not an image file");
    if (!stat.isFile()) throw refuse("it is not a regular file (a device, FIFO or socket)");
    if (stat.size < 64 * 1024)
      throw refuse(`it is too small (${stat.size} bytes) to be a filesystem`);
    // O_NONBLOCK: should the path turn into a FIFO after the stat, opening it does not hang.
    const handle = await fsp
      .open(rootfs, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
      .catch((err: NodeJS.ErrnoException) => {
        throw refuse(err.code === "EACCES" ? "permission denied" : `cannot open it (${err.code})`);
      });
    await handle.close();
    if (!(await isExt4(rootfs)))
      throw refuse("it is not an ext4 filesystem image (no ext4 superblock)");
    // The magic is two bytes; dumpe2fs reads the whole superblock and its group descriptors.
    const check = await this.deps.runner.run("dumpe2fs", ["-h", rootfs], { timeoutMs: 30_000 });
    if (check.code !== 0) {
      const why = check.stderr
        .split("\n")
        .map((l) => l.trim())
        .filter((l) => l !== "" && !/^dumpe2fs [\d.]+ \(/.test(l))
        .map((l) => l.replace(/^dumpe2fs: /, "").replace(/ while trying to open .*$/, ""))[0];
      throw refuse(
        `it is not a valid ext4 filesystem (${why ?? "dumpe2fs failed"})`,
        "check it with 'e2fsck -n -f <file>'",
      );
    }
    const blocks = Number(/^Block count:\s+(\d+)/m.exec(check.stdout)?.[1] ?? NaN);
    const blockSize = Number(/^Block size:\s+(\d+)/m.exec(check.stdout)?.[1] ?? NaN);
    if (!(blocks > 0 && blockSize > 0))
      throw refuse("it is not a valid ext4 filesystem (no block count in its superblock)");
    if (blocks * blockSize > stat.size)
      throw refuse(
        `it is truncated: its superblock says ${blocks * blockSize} bytes, the file has ${stat.size}`,
        "check it with 'e2fsck -n -f <file>'",
      );
  }

  async delete(name: string): Promise<{ deleted: string }> {
    const row = this.row(name);
    const users = this.deps.store.listVms().filter((v) => v.imageId === row.id);
    if (users.length > 0) {
      throw new BangerError(
        ErrorCode.InvalidState,
        `image "${name}" is used by VM(s) ${users.map((v) => v.name).join(", ")}`,
        "delete those VMs first ('banger vm delete <name>')",
      );
    }
    this.deps.store.deleteImage(row.id);
    if (row.managed) await fsp.rm(path.dirname(row.rootfsPath), { recursive: true, force: true });
    return { deleted: name };
  }

  /** Copies a registered image's file into banger's store, so it no longer depends on the original. */
  async promote(name: string): Promise<ImageInfo> {
    const row = this.row(name);
    if (row.managed)
      throw new BangerError(ErrorCode.InvalidState, `image "${name}" is already managed by banger`);
    const finalDir = path.join(this.deps.layout.imagesDir, row.id);
    const staging = `${finalDir}.staging`;
    await fsp.mkdir(staging, { recursive: true });
    try {
      // FICLONE: instant on reflink filesystems, a plain copy elsewhere.
      await fsp.copyFile(
        row.rootfsPath,
        path.join(staging, "rootfs.ext4"),
        fs.constants.COPYFILE_FICLONE,
      );
      await publishDir(staging, finalDir, { replace: false });
    } finally {
      await fsp.rm(staging, { recursive: true, force: true });
    }
    const rootfs = path.join(finalDir, "rootfs.ext4");
    this.deps.store.updateImageRootfs(row.id, rootfs, true);
    return imageInfo({ ...row, rootfsPath: rootfs, managed: true });
  }

  /** Empties the OCI blob cache without disturbing a pull in flight (it holds its own links). */
  async cachePrune(
    dryRun: boolean,
  ): Promise<{ freedBytes: number; blobs: number; dir: string; dryRun: boolean }> {
    const dir = this.deps.layout.ociBlobsDir;
    let freedBytes = 0;
    let blobs = 0;
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      const stat = await fsp.lstat(path.join(dir, name)).catch(() => null);
      if (!stat?.isFile()) continue;
      freedBytes += stat.size;
      blobs++;
    }
    if (!dryRun && fs.existsSync(dir)) {
      const aside = `${dir}.prune-${randomBytes(4).toString("hex")}`;
      await fsp.rename(dir, aside);
      await fsp.mkdir(dir, { recursive: true });
      await fsp.rm(aside, { recursive: true, force: true });
    }
    return { freedBytes, blobs, dir, dryRun };
  }

  /** The image a VM asks for; the default one is built on first use. */
  async ensure(
    name: string,
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<ImageInfo> {
    // Two first-time creates at once: the second waits for the first one's build rather than
    // failing Busy; if that build fails (or its caller cancels it), the waiter builds itself.
    return existingOrMade({
      existing: () => {
        const row = this.deps.store.getImageByName(name);
        return row ? imageInfo(row) : null;
      },
      inflight: () => this.inflight.get(name),
      waiting: () =>
        progress({ stage: "image", message: `waiting for the build of ${name} already running` }),
      make: () => {
        if (name !== DEFAULT_IMAGE_NAME)
          throw new BangerError(
            ErrorCode.NotFound,
            `no image named ${JSON.stringify(name)}`,
            `'banger image pull <ref> --name ${name}' or 'banger image list'`,
          );
        progress({
          stage: "image",
          message: `building the default image ${name} (first run only)`,
        });
        return this.build({ name }, progress, signal);
      },
      tooMany: (n) =>
        new BangerError(
          ErrorCode.Busy,
          `image "${name}" did not appear after ${n} builds by other requests`,
          "retry; 'banger image build' shows why it fails",
        ),
      signal,
    });
  }
}
