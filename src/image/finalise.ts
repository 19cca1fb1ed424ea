import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { removeTree } from "../util/remove-tree.js";
import { buildExt4, defaultExt4Size, ext4SizeWithFree } from "../disk/ext4.js";
import {
  ASSET_TYPE_BITS,
  guestAssets,
  WORK_DISK_FSTAB_LINE,
  type AssetScripts,
} from "../guest/assets.js";
import { loadGuestScripts } from "../guest/scripts.js";
import { TOOLKIT_DIR } from "../config/defaults.js";
import { hostToolkit, withInterpreter, type HostToolkit } from "../guest/toolkit.js";
import type { CommandRunner } from "../system/runner.js";
import { S_IFREG, type EntryTable } from "../disk/entry-meta.js";
import { pickInit } from "./guest-init.js";
import { prepareParent, readTreeText, rewriteTreeFile } from "./guest-tree.js";
import { ensureRootLogin, type RootLogin } from "./root-login.js";
import { DEFAULT_IMAGE_LIMITS, ensureFreeSpace, type ImageLimits } from "./limits.js";
import { flattenLayers } from "./oci/flatten.js";
import { writeImageEnv } from "./image-env.js";
import type { ImageConfig } from "../api/methods.js";

/** What finalisation decided about the image, kept in /usr/lib/banger/finalise.json too. */
export interface GuestSetup {
  /** The init banger's initramfs switches to (`banger.init=`). */
  init: string;
  rootLogin: RootLogin;
}

/**
 * Adds the toolkit, the network, first-boot and SSH units, the sshd drop-in, banger's init,
 * the work-disk fstab line and root's login; picks the init.
 */
export async function injectGuestAssets(
  tree: string,
  entries: EntryTable,
  scripts: AssetScripts,
  toolkit: HostToolkit,
): Promise<GuestSetup> {
  for (const asset of guestAssets(scripts, toolkit)) {
    await prepareParent(tree, asset.path, entries);
    const abs = path.join(tree, asset.path);
    const existing = await fsp.lstat(abs).catch(() => null);
    if (asset.kind === "dir") {
      if (existing && !existing.isDirectory()) await removeTree(abs);
      if (!existing?.isDirectory()) await fsp.mkdir(abs, { mode: 0o755 });
    } else {
      if (existing) await removeTree(abs);
      if (asset.kind === "symlink") await fsp.symlink(asset.target!, abs);
      else if (asset.source !== undefined && asset.interpreter !== undefined) {
        const elf = withInterpreter(
          await fsp.readFile(asset.source),
          asset.interpreter,
          asset.source,
        );
        await fsp.writeFile(abs, elf, { mode: asset.mode });
      } else if (asset.source !== undefined) await fsp.copyFile(asset.source, abs);
      else await fsp.writeFile(abs, asset.content ?? "", { mode: asset.mode });
    }
    entries.set(asset.path, { uid: 0, gid: 0, mode: ASSET_TYPE_BITS[asset.kind] | asset.mode });
  }

  // The per-VM work disk is mounted at /root.
  await prepareParent(tree, "etc/fstab", entries);
  // By rename, as every file of the image banger changes: a hardlinked twin keeps its text.
  const current = (await readTreeText(tree, "etc/fstab", "add the work disk")) ?? "";
  if (!current.split("\n").includes(WORK_DISK_FSTAB_LINE)) {
    const sep = current === "" || current.endsWith("\n") ? "" : "\n";
    await rewriteTreeFile(
      tree,
      "etc/fstab",
      `${current}${sep}# banger: per-VM work disk\n${WORK_DISK_FSTAB_LINE}\n`,
    );
  }
  if (!entries.has("etc/fstab"))
    entries.set("etc/fstab", { uid: 0, gid: 0, mode: S_IFREG | 0o644 });

  // Older sshd_config files lack the Include that reads the drop-in.
  const sshdConfig = "etc/ssh/sshd_config";
  const sshdStat = await fsp.lstat(path.join(tree, sshdConfig)).catch(() => null);
  if (sshdStat?.isFile()) {
    const text = (await readTreeText(tree, sshdConfig, "add banger's sshd settings")) ?? "";
    if (!/^\s*Include\s+\/etc\/ssh\/sshd_config\.d\/\*\.conf/m.test(text))
      await rewriteTreeFile(tree, sshdConfig, `Include /etc/ssh/sshd_config.d/*.conf\n${text}`);
  }

  const setup: GuestSetup = {
    init: await pickInit(tree),
    rootLogin: await ensureRootLogin(tree, entries),
  };
  const record = `${TOOLKIT_DIR}/finalise.json`;
  await fsp.writeFile(path.join(tree, record), `${JSON.stringify(setup, null, 2)}\n`);
  entries.set(record, { uid: 0, gid: 0, mode: S_IFREG | 0o644 });
  return setup;
}

export interface FinaliseOptions {
  /** Layer blobs (tar, tar.gz or tar.zst), oldest first. */
  layers: string[];
  /** Where to work; receives rootfs.ext4. */
  stagingDir: string;
  /** The user's --size; it must fit the content. */
  sizeBytes?: number | undefined;
  /** Without sizeBytes: size the filesystem to keep this much free beyond the content. */
  freeBytes?: number | undefined;
  runner: CommandRunner;
  progress?: (stage: string, message?: string) => void;
  limits?: ImageLimits;
  /** The injected scripts; read from guest-scripts/ when not given (once per image: it is rare). */
  scripts?: AssetScripts;
  /** The toolkit's host files; found on the host (`hostToolkit`) when not given. */
  toolkit?: HostToolkit;
  /** The image's OCI config: its Env and WorkingDir are written for image-env.sh. */
  config?: ImageConfig | null;
}

export interface FinaliseResult extends GuestSetup {
  rootfs: string;
  sizeBytes: number;
  files: number;
}

/** Layers → flattened tree → guest assets → ext4 with exact ownership. The tree is removed afterwards. */
export async function finaliseImage(opts: FinaliseOptions): Promise<FinaliseResult> {
  const progress = opts.progress ?? (() => {});
  const tree = path.join(opts.stagingDir, "tree");
  await fsp.mkdir(tree, { recursive: true });
  let entries: Awaited<ReturnType<typeof flattenLayers>>["entries"] | undefined;
  try {
    progress("flatten", `${opts.layers.length} layer(s)`);
    const flat = await flattenLayers(opts.layers, tree, {
      limits: opts.limits ?? DEFAULT_IMAGE_LIMITS,
      entriesFile: path.join(opts.stagingDir, "entries.db"),
    });
    entries = flat.entries;
    const { estimatedBytes } = flat;
    progress("guest assets", "toolkit, init, network, first boot, SSH, work disk");
    const scripts = opts.scripts ?? loadGuestScripts();
    const setup = await injectGuestAssets(
      tree,
      entries,
      scripts,
      opts.toolkit ?? (await hostToolkit(opts.runner)),
    );
    await writeImageEnv(tree, entries, opts.config ?? null, scripts);
    const sizeBytes =
      opts.sizeBytes ??
      (opts.freeBytes !== undefined
        ? ext4SizeWithFree(entries.estimatedBytes(), opts.freeBytes)
        : defaultExt4Size(estimatedBytes));
    if (opts.sizeBytes !== undefined && opts.sizeBytes < estimatedBytes) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `--size is too small: the image needs about ${Math.ceil(estimatedBytes / 2 ** 20)} MiB`,
        "omit --size to let banger pick (the content plus half again, at least 1 GiB)",
      );
    }
    const files = entries.size;
    progress("ext4", `${files} files`);
    // The filesystem is sparse, but mkfs writes every byte the tree holds.
    await ensureFreeSpace(opts.stagingDir, estimatedBytes, "the image's ext4 filesystem");
    const rootfs = path.join(opts.stagingDir, "rootfs.ext4");
    await buildExt4({ tree, entries, output: rootfs, sizeBytes, runner: opts.runner });
    return { ...setup, rootfs, sizeBytes, files };
  } finally {
    entries?.close();
    await removeTree(tree);
  }
}
