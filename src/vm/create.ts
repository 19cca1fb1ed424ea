import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { randomVmName, VM_NAME } from "../api/vm-names.js";
import { loadConfig } from "../config/config.js";
import { checkVmShape } from "../config/limits.js";
import { resolveVmDefaults } from "../config/vm-defaults.js";
import { createWorkDisk } from "../disk/work-disk.js";
import { DEFAULT_IMAGE_NAME, DISTRO_KERNEL_NAME } from "../config/defaults.js";
import type { Progress } from "../image/service.js";
import type { VmRow } from "../store/store.js";
import { VM_CREATING_MARKER, WORK_DISK, type VmContext } from "./context.js";
import { deleteVms } from "./delete.js";
import { startVm } from "./start.js";
import { killVm } from "./stop.js";

export interface CreateRequest {
  name?: string | undefined;
  image?: string | undefined;
  kernelRef?: string | undefined;
  vcpu?: number | undefined;
  memoryBytes?: number | undefined;
  diskBytes?: number | undefined;
  nat?: boolean | undefined;
  start?: boolean | undefined;
}

/** A free generated name (`brisk-otter`), for a VM created without --name. */
export function generateName(ctx: VmContext): string {
  for (let i = 0; i < 50; i++) {
    const name = randomVmName();
    if (!ctx.deps.store.getVmByName(name)) return name;
  }
  return `vm-${randomBytes(3).toString("hex")}`;
}

/** Validates everything first; then builds disks under vms/<id>/, removing it all on any failure. */
export async function createVm(
  ctx: VmContext,
  req: CreateRequest,
  progress: Progress = () => {},
  signal?: AbortSignal,
): Promise<VmInfo & { warnings: string[] }> {
  const { store } = ctx.deps;
  const name = req.name ?? generateName(ctx);
  if (!VM_NAME.test(name)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid VM name ${JSON.stringify(name)}`,
      "a DNS label: lower-case letters, digits and '-', at most 63, not starting or ending with '-'",
    );
  }
  if (store.getVmByName(name)) {
    throw new BangerError(
      ErrorCode.AlreadyExists,
      `a VM named "${name}" already exists`,
      `pick another --name, or 'banger vm delete ${name}'`,
    );
  }
  const { config, vcpu, memoryBytes, diskBytes, imageName } = await resolveShape(ctx, req);

  return ctx.locks.run(`name:${name}`, async () => {
    const image = await ctx.deps.images.ensure(imageName, progress, signal);
    const kernel = await ctx.deps.kernels.ensure(
      req.kernelRef ?? image.kernel ?? DISTRO_KERNEL_NAME,
      (p) => progress({ ...p, stage: `kernel: ${p.stage}` }),
      signal,
    );
    const id = randomBytes(6).toString("hex");
    const vmm = await ctx.deps.pickVmm();
    const driver = ctx.driverFor(vmm);
    const dir = ctx.dirOf(id);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    // Until the row exists this dir is unfinished work the start-up sweep may remove.
    await fsp.writeFile(path.join(dir, VM_CREATING_MARKER), "");
    const now = new Date().toISOString();
    const row: VmRow = {
      id,
      name,
      imageId: image.id,
      kernelRef: kernel.name,
      vcpu,
      memoryBytes,
      diskBytes,
      state: "created",
      nat: req.nat ?? false,
      ip: null,
      mac: null,
      vmm,
      teardownJson: null,
      snapshotId: null,
      createdAt: now,
      updatedAt: now,
    };
    const warnings: string[] = [];
    try {
      progress({ stage: "disks", message: "copy-on-write root" });
      await driver.rootDisk.prepare(image.rootfsPath, dir);
      const identity = await ctx.sshIdentity();
      progress({ stage: "disks", message: "work disk" });
      const synced = await createWorkDisk({
        file: path.join(dir, WORK_DISK),
        sizeBytes: diskBytes,
        authorizedKey: await fsp.readFile(identity.publicKey, "utf8"),
        runner: ctx.deps.runner,
        fileSync: config.fileSync,
        ...(ctx.deps.homeDir ? { homeDir: ctx.deps.homeDir } : {}),
      });
      warnings.push(...synced.warnings);
      for (const w of synced.warnings) ctx.deps.log?.info({ vm: name }, w);
      store.insertVm(row);
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw err;
    }
    // The row owns the dir now (the sweep never touches what a row owns): the marker is moot.
    await fsp.rm(path.join(dir, VM_CREATING_MARKER), { force: true }).catch(() => undefined);
    if (req.start === false) return { ...ctx.info(row), warnings };
    try {
      return { ...(await startVm(ctx, name, progress, signal)), warnings };
    } catch (err) {
      // A create its caller gave up on (Ctrl-C, disconnect) leaves nothing behind.
      if (signal?.aborted) {
        await killVm(ctx, name)
          .then(() => deleteVms(ctx, [name]))
          .catch((e: unknown) =>
            ctx.deps.log?.error({ err: e, vm: name }, "could not remove a cancelled VM"),
          );
      }
      throw err;
    }
  });
}

/** The shape a create asks for (its defaults from the config), checked; the image must exist or be the default. */
export async function resolveShape(ctx: VmContext, req: CreateRequest) {
  const { store } = ctx.deps;
  const config = await loadConfig(ctx.deps.layout.configFile);
  const defaults = resolveVmDefaults(config, ctx.deps.host);
  const vcpu = req.vcpu ?? defaults.vcpu.value;
  const memoryBytes = req.memoryBytes ?? defaults.memoryBytes.value;
  const diskBytes = req.diskBytes ?? defaults.diskBytes.value;
  checkVmShape({ vcpu, memoryBytes, diskBytes }, ctx.deps.host);
  const imageName = req.image ?? config.defaultImageName;
  // The default image is built on first use; any other must be there already.
  if (req.image && !store.getImageByName(req.image) && req.image !== DEFAULT_IMAGE_NAME) {
    throw new BangerError(
      ErrorCode.NotFound,
      `no image named ${JSON.stringify(req.image)}`,
      "'banger image list' shows what exists; 'banger image pull <ref>' adds one",
    );
  }

  return { config, vcpu, memoryBytes, diskBytes, imageName };
}
