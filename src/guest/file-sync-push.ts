import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import tar from "tar-stream";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { FileSyncEntry } from "../config/config.js";
import { S_IFDIR, S_IFREG, type EntryMeta } from "../disk/entry-meta.js";
import { stageFileSync, type FileSyncResult } from "./file-sync.js";
import type { GuestShell } from "./shell.js";
import type { GuestTarget } from "./ssh.js";
import { TOOLKIT_DIR } from "../config/defaults.js";
import { packFile } from "../util/tar-pack.js";

/** The longest pushing the synced files into a running guest may take. */
const PUSH_MS = 120_000;

/**
 * `[[file_sync]]` into a running guest's /root, for a VM whose work disk was not made for it (a
 * clone restored from a boot snapshot): the same staging as a new work disk (stageFileSync), sent
 * as one tar with the same owners and modes and unpacked by the toolkit's tar. What the config no
 * longer names is left as the snapshot had it.
 */
export async function pushFileSync(opts: {
  shell: GuestShell;
  target: GuestTarget;
  entries: FileSyncEntry[];
  homeDir?: string;
  signal?: AbortSignal;
}): Promise<FileSyncResult> {
  if (opts.entries.length === 0) return { synced: [], warnings: [] };
  // 0700 (mkdtemp's mode): synced secrets pass through the temp dir.
  const staging = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-sync-"));
  try {
    const meta = new Map<string, EntryMeta>();
    const result = await stageFileSync({
      entries: opts.entries,
      staging,
      homeDir: opts.homeDir ?? os.homedir(),
      meta,
    });
    if (meta.size === 0) return result;
    const pack = tar.pack();
    const packing = packEntries(pack, staging, meta).then(
      () => pack.finalize(),
      (err: unknown) => pack.destroy(err as Error),
    );
    const res = await opts.shell.stream(
      opts.target,
      // banger's busybox tar, in every image it finalised; as root it keeps the archive's owners.
      `/${TOOLKIT_DIR}/bin/tar -x -C /root -f -`,
      {
        // tar-stream's pack is a streamx stream: GuestShell pipes and unpipes a Node one.
        stdin: Readable.from(pack),
        signal: opts.signal ?? new AbortController().signal,
        timeoutMs: PUSH_MS,
        what: "file_sync",
      },
    );
    await packing;
    if (res.code !== 0) {
      throw new BangerError(
        ErrorCode.Internal,
        `could not copy [[file_sync]] into VM ${opts.target.vmName}: tar exited ${String(res.code)}`,
        "'banger vm ssh <name>' to look; check the free space under /root",
      );
    }
    return result;
  } finally {
    await fsp.rm(staging, { recursive: true, force: true });
  }
}

/** Parents before children (the map's keys are paths under /root), each with its owner and mode. */
async function packEntries(
  pack: tar.Pack,
  staging: string,
  meta: Map<string, EntryMeta>,
): Promise<void> {
  for (const rel of [...meta.keys()].sort()) {
    const m = meta.get(rel)!;
    const type = m.mode & 0o170000;
    const kind = type === S_IFDIR ? "directory" : type === S_IFREG ? "file" : "symlink";
    await packFile(pack, { name: rel, file: path.join(staging, rel), kind, ...m });
  }
}
