import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { EntryTable } from "./entry-meta.js";
import { MAX_OUTPUT_BYTES_CEILING, runChecked, type CommandRunner } from "../system/runner.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** Image size when the user gives none: the tree plus half again, at least 1 GiB, whole MiB. */
export function defaultExt4Size(estimatedBytes: number): number {
  const wanted = Math.max(Math.ceil(estimatedBytes * 1.5), GiB);
  return Math.ceil(wanted / MiB) * MiB;
}

/**
 * Image size that leaves `freeBytes` free once the tree is in: the tree, the free room, and
 * a sixteenth on top for what ext4 keeps for itself (journal, inode tables, bitmaps), whole MiB.
 */
export function ext4SizeWithFree(estimatedBytes: number, freeBytes: number): number {
  return Math.ceil(((estimatedBytes + freeBytes) * 17) / 16 / MiB) * MiB;
}

export interface BuildExt4Options {
  tree: string;
  entries: EntryTable;
  output: string;
  sizeBytes: number;
  runner: CommandRunner;
  label?: string;
}

/** debugfs path argument: absolute, quoted (hostile names were rejected earlier). */
const q = (rel: string) => `"/${rel}"`;

/**
 * Builds an ext4 image from a tree without root: `mkfs.ext4 -d` copies the
 * files, then one batched debugfs script sets the ownership, modes and
 * capabilities the layers asked for (the files on disk are ours, not root's).
 */
export async function buildExt4(opts: BuildExt4Options): Promise<void> {
  const { runner } = opts;
  if (opts.sizeBytes < 16 * MiB)
    throw new BangerError(ErrorCode.InvalidParams, "an image must be at least 16 MiB");
  const handle = await fsp.open(opts.output, "w");
  await handle.truncate(opts.sizeBytes);
  await handle.close();
  const inodes = Math.max(65_536, opts.entries.size * 2);
  // No size argument: mke2fs uses the whole (sparse) file.
  await runChecked(
    runner,
    "mkfs.ext4",
    [
      "-F",
      "-q",
      "-N",
      String(inodes),
      "-L",
      opts.label ?? "rootfs",
      "-E",
      "root_owner=0:0",
      "-d",
      opts.tree,
      opts.output,
    ],
    { timeoutMs: 30 * 60_000 },
  );
  await applyMetadata(opts.output, opts.tree, opts.entries, runner);
}

/** debugfs commands per run: each run's script and output stay small however many entries there are. */
const DEBUGFS_BATCH = 20_000;

/** debugfs runs that make every inode's uid, gid, mode and capability match the layers. */
export async function applyMetadata(
  image: string,
  tree: string,
  entries: EntryTable,
  runner: CommandRunner,
): Promise<void> {
  const capDir = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-caps-"));
  try {
    let lines: string[] = [];
    let capIndex = 0;
    const flush = async () => {
      if (lines.length === 0) return;
      const input = `${lines.join("\n")}\n`;
      lines = [];
      await runDebugfs(runner, image, input);
    };
    for (const [rel, want] of entries) {
      if (rel === "") continue; // root_owner covers /, its mode follows the tree
      // mkfs copied what the tree has on disk; only differences need a command.
      const have = await fsp.lstat(path.join(tree, rel)).catch(() => null);
      if (!have) continue;
      if (have.uid !== want.uid) lines.push(`sif ${q(rel)} uid ${want.uid}`);
      if (have.gid !== want.gid) lines.push(`sif ${q(rel)} gid ${want.gid}`);
      if (have.mode !== want.mode) lines.push(`sif ${q(rel)} mode 0${want.mode.toString(8)}`);
      if (want.capability) {
        const file = path.join(capDir, String(capIndex++));
        await fsp.writeFile(file, want.capability);
        lines.push(`ea_set -f ${file} ${q(rel)} security.capability`);
      }
      if (lines.length >= DEBUGFS_BATCH) await flush();
    }
    const root = entries.get("");
    if (root) lines.push(`sif / mode 0${root.mode.toString(8)}`);
    await flush();
  } finally {
    await fsp.rm(capDir, { recursive: true, force: true });
  }
}

async function runDebugfs(runner: CommandRunner, image: string, input: string): Promise<void> {
  const result = await runner.run("debugfs", ["-w", "-f", "-", image], {
    input,
    timeoutMs: 30 * 60_000,
    // debugfs echoes every command of the script: a batch of many files says a lot.
    maxOutputBytes: MAX_OUTPUT_BYTES_CEILING,
  });
  // debugfs exits 0 even when a command fails; its complaints are on stderr.
  const errors = result.stderr
    .split("\n")
    .filter((l) => l.trim() !== "" && !/^debugfs [\d.]+ \(/.test(l));
  if (result.code !== 0 || errors.length > 0) {
    throw new BangerError(
      ErrorCode.Internal,
      `debugfs could not set file metadata in ${image}: ${errors.slice(0, 5).join("; ")}`,
    );
  }
}

export interface DebugfsStat {
  uid: number;
  gid: number;
  mode: number;
  type: string;
}

/** Reads one inode's owner and mode back from an image (used by tests and `image show`). */
export async function statInImage(
  runner: CommandRunner,
  image: string,
  file: string,
): Promise<DebugfsStat | null> {
  const result = await runner.run("debugfs", ["-R", `stat "${file}"`, image]);
  const m = /Type: (\S+)\s+Mode:\s+(\d+)/.exec(result.stdout);
  const u = /User:\s+(\d+)\s+Group:\s+(\d+)/.exec(result.stdout);
  if (!m || !u) return null;
  return { type: m[1]!, mode: Number.parseInt(m[2]!, 8), uid: Number(u[1]), gid: Number(u[2]) };
}

/** Reads a file's contents out of an image. */
export async function catInImage(
  runner: CommandRunner,
  image: string,
  file: string,
): Promise<string | null> {
  const result = await runner.run("debugfs", ["-R", `cat "${file}"`, image], {
    maxOutputBytes: MAX_OUTPUT_BYTES_CEILING,
  });
  if (result.code !== 0 || /File not found/.test(result.stderr)) return null;
  return result.stdout;
}

/** ext4 superblock magic 0xEF53 at byte 1080 (false when the file cannot be opened). */
export async function hasExt4Magic(file: string): Promise<boolean> {
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
