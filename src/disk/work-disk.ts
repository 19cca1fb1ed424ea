import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { runChecked, type CommandRunner } from "../system/runner.js";
import { applyMetadata } from "./ext4.js";
import { S_IFDIR, S_IFREG, type EntryMeta } from "./entry-meta.js";
import type { FileSyncEntry } from "../config/config.js";
import { stageFileSync, type FileSyncResult } from "../guest/file-sync.js";

/**
 * The per-VM work disk, mounted at /root in the guest: a sparse ext4 made with
 * `mkfs.ext4 -d` from a staging /root holding .ssh/authorized_keys and the
 * config's synced files. Owners and modes are set with debugfs, so no step needs root.
 */
export async function createWorkDisk(opts: {
  file: string;
  sizeBytes: number;
  authorizedKey: string;
  runner: CommandRunner;
  /** `[[file_sync]]` entries from the config, copied in root-owned. */
  fileSync?: FileSyncEntry[];
  /** What `~/` in a file_sync host path means. */
  homeDir?: string;
}): Promise<FileSyncResult> {
  const staging = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-work-"));
  try {
    // The staging tree stays 0700 (mkdtemp's mode): synced secrets pass through /tmp.
    // Every mode the guest sees, / included, comes from the metadata below.
    await fsp.mkdir(path.join(staging, ".ssh"), { mode: 0o700 });
    await fsp.writeFile(
      path.join(staging, ".ssh", "authorized_keys"),
      opts.authorizedKey.endsWith("\n") ? opts.authorizedKey : `${opts.authorizedKey}\n`,
      { mode: 0o600 },
    );
    const entries = new Map<string, EntryMeta>([
      [".ssh", { uid: 0, gid: 0, mode: S_IFDIR | 0o700 }],
      [".ssh/authorized_keys", { uid: 0, gid: 0, mode: S_IFREG | 0o600 }],
    ]);
    const synced = await stageFileSync({
      entries: opts.fileSync ?? [],
      staging,
      homeDir: opts.homeDir ?? os.homedir(),
      meta: entries,
    });
    // Lazy inode tables and no resize inode: an 8 GiB work disk costs ~200 KiB until the guest writes.
    // 0600 whatever the umask: the disk holds the synced secrets (tokens, keys, configs).
    const handle = await fsp.open(opts.file, "w", 0o600);
    try {
      await handle.chmod(0o600);
      await handle.truncate(opts.sizeBytes);
    } finally {
      await handle.close();
    }
    await runChecked(
      opts.runner,
      "mkfs.ext4",
      [
        "-F",
        "-q",
        "-L",
        "banger-work",
        "-O",
        "^resize_inode",
        "-E",
        "root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
        "-d",
        staging,
        opts.file,
      ],
      { timeoutMs: 120_000 },
    );
    entries.set("", { uid: 0, gid: 0, mode: S_IFDIR | 0o755 });
    await applyMetadata(opts.file, staging, entries, opts.runner);
    return synced;
  } catch (err) {
    await fsp.rm(opts.file, { force: true });
    throw err;
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}

/** Copy-on-write root: a qcow2 whose backing file is the image's raw ext4. Costs kilobytes, whatever the image size. */
export async function createRootOverlay(opts: {
  backing: string;
  file: string;
  runner: CommandRunner;
  /** The backing file's format: an image's raw ext4, or a snapshot's qcow2 root. */
  backingFormat?: "raw" | "qcow2";
}): Promise<void> {
  await runChecked(opts.runner, "qemu-img", [
    "create",
    "-q",
    "-f",
    "qcow2",
    "-F",
    opts.backingFormat ?? "raw",
    "-b",
    path.resolve(opts.backing),
    opts.file,
  ]);
  // What the guest writes to its root disk is its own business: the user's, not the host's.
  await fsp.chmod(opts.file, 0o600);
}
