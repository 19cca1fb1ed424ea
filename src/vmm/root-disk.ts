import fsp from "node:fs/promises";
import path from "node:path";
import { createRootOverlay } from "../disk/work-disk.js";
import { runChecked, type CommandRunner } from "../system/runner.js";
import type { RootDisk } from "./driver.js";

/** Allocated bytes of a file (0 when it is not there). */
export async function allocatedBytes(file: string): Promise<number> {
  return ((await fsp.stat(file).catch(() => null))?.blocks ?? 0) * 512;
}

function rootDiskAt(fileName: string, make: (backing: string, file: string) => Promise<void>) {
  const at = (vmDir: string) => path.join(vmDir, fileName);
  return {
    path: at,
    prepare: (backing, vmDir) => make(backing, at(vmDir)),
    usedBytes: (vmDir) => allocatedBytes(at(vmDir)),
  } satisfies RootDisk;
}

/** QEMU: a qcow2 overlay whose backing file is the image's raw ext4. */
export function qcow2RootDisk(runner: CommandRunner): RootDisk {
  return rootDiskAt("root.qcow2", (backing, file) => createRootOverlay({ backing, file, runner }));
}

/**
 * A raw disk copied: a reflink where the filesystem can (O(1)), else a sparse copy. The copy is
 * the user's alone (mode 0600), whatever the source's mode.
 */
export async function copyRawDisk(
  runner: CommandRunner,
  from: string,
  to: string,
  timeoutMs?: number,
): Promise<void> {
  await runChecked(
    runner,
    "cp",
    ["--reflink=auto", "--sparse=always", from, to],
    timeoutMs === undefined ? undefined : { timeoutMs },
  );
  await fsp.chmod(to, 0o600);
}

/** Raw disks (Firecracker): the image's rootfs copied (copyRawDisk). */
export function copiedRootDisk(runner: CommandRunner): RootDisk {
  return rootDiskAt("root.ext4", (backing, file) => copyRawDisk(runner, backing, file));
}
