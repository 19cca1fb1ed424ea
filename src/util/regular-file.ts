import fs from "node:fs";
import fsp, { type FileHandle } from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { BangerError, ErrorCode } from "../api/errors.js";
import { formatSizeBytes } from "./size.js";

/** What a non-regular path is, in a user's words. */
export function describeKind(stat: fs.Stats): string {
  if (stat.isFIFO()) return "a FIFO (named pipe)";
  if (stat.isCharacterDevice()) return "a character device";
  if (stat.isBlockDevice()) return "a block device";
  if (stat.isSocket()) return "a socket";
  if (stat.isDirectory()) return "a directory";
  if (stat.isSymbolicLink()) return "a symbolic link";
  return "not a regular file";
}

function notRegular(what: string, file: string, kind: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `${what} ${file} is ${kind}, not a regular file`,
    `give ${what === "the config file" ? "a regular file" : `a regular file as the ${what}`}`,
  );
}

/** Is `child` the directory `root` or inside it (both already resolved)? */
export function isInside(root: string, child: string): boolean {
  return child === root || child.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

export interface OpenRegularOptions {
  /**
   * Symlinks are followed only when their target resolves inside this directory (a hostile
   * directory may hold `vmlinuz -> /etc/shadow`); without it, a symlink is refused outright.
   */
  within?: string;
  /** The user named this path themselves: follow symlinks (the target must still be a regular file). */
  follow?: boolean;
  /** Refuse files larger than this many bytes. */
  maxBytes?: number;
}

export interface RegularFile {
  handle: FileHandle;
  /** The path that was opened (symlinks resolved). */
  path: string;
  size: number;
}

/**
 * Opens a user-given path for reading only if it is a regular file. It is opened with O_NONBLOCK
 * (a FIFO never blocks a libuv thread) and O_NOFOLLOW on the resolved path, then checked with
 * fstat on the open descriptor, so what is read is what was checked. The caller closes `handle`.
 */
export async function openRegularFile(
  file: string,
  what: string,
  opts: OpenRegularOptions = {},
): Promise<RegularFile> {
  const missing = (): BangerError =>
    new BangerError(ErrorCode.NotFound, `${what} ${file} does not exist`);
  const lstat = await fsp.lstat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT" || err.code === "ENOTDIR") throw missing();
    throw new BangerError(ErrorCode.InvalidParams, `cannot read ${what} ${file}: ${err.message}`);
  });
  let target = file;
  if (lstat.isSymbolicLink()) {
    if (opts.within === undefined && !opts.follow) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} ${file} is a symbolic link; banger does not follow it`,
        "give the file it points to instead",
      );
    }
    target = await fsp.realpath(file).catch((err: NodeJS.ErrnoException) => {
      throw new BangerError(
        ErrorCode.NotFound,
        err.code === "ELOOP"
          ? `${what} ${file} is a loop of symbolic links`
          : `${what} ${file} is a symbolic link to something that does not exist`,
      );
    });
  }
  if (opts.within !== undefined) {
    const root = await fsp.realpath(opts.within);
    const real = lstat.isSymbolicLink() ? target : await fsp.realpath(file);
    if (!isInside(root, real)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} ${file} resolves to ${real}, outside ${opts.within}`,
        `banger copies only files inside ${opts.within}; copy the file there instead of linking to it`,
      );
    }
    target = real;
  }
  const flags =
    fs.constants.O_RDONLY |
    fs.constants.O_NONBLOCK |
    fs.constants.O_NOFOLLOW |
    fs.constants.O_NOCTTY;
  const handle = await fsp.open(target, flags).catch((err: NodeJS.ErrnoException) => {
    // ENXIO: a socket; ELOOP: the last component turned into a symlink since the check.
    if (err.code === "ENXIO") throw notRegular(what, file, "a socket");
    if (err.code === "ELOOP") throw notRegular(what, file, "a symbolic link");
    if (err.code === "ENOENT") throw missing();
    throw new BangerError(ErrorCode.InvalidParams, `cannot read ${what} ${file}: ${err.message}`);
  });
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) throw notRegular(what, file, describeKind(stat));
    if (opts.within !== undefined) {
      // What was opened, not what was checked: a directory component swapped for a link since.
      const opened = await fsp.readlink(`/proc/self/fd/${handle.fd}`).catch(() => target);
      if (!isInside(await fsp.realpath(opts.within), opened)) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          `${what} ${file} moved outside ${opts.within} while banger read it`,
        );
      }
    }
    if (opts.maxBytes !== undefined && stat.size > opts.maxBytes) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${what} ${file} is ${formatSizeBytes(stat.size)}, more than the ${formatSizeBytes(opts.maxBytes)} banger reads`,
      );
    }
    return { handle, path: target, size: stat.size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Reads a whole regular file (see openRegularFile), at most `maxBytes`. */
export async function readRegularFile(
  file: string,
  what: string,
  opts: OpenRegularOptions & { maxBytes: number },
): Promise<Buffer> {
  const { handle } = await openRegularFile(file, what, opts);
  try {
    const chunks: Buffer[] = [];
    let total = 0;
    // Read past the cap by one chunk at most: the file may have grown since fstat.
    while (total <= opts.maxBytes) {
      const buf = Buffer.alloc(64 * 1024);
      const { bytesRead } = await handle.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
    }
    if (total > opts.maxBytes) throw tooLarge(what, file, opts.maxBytes);
    return Buffer.concat(chunks);
  } finally {
    await handle.close();
  }
}

function tooLarge(what: string, file: string, maxBytes: number): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `${what} ${file} is more than the ${formatSizeBytes(maxBytes)} banger reads`,
  );
}

/**
 * The synchronous twin of readRegularFile for the few callers that cannot await (help text).
 * Symlinks are followed (the user named the path); the target must be a regular file.
 */
export function readRegularFileSync(file: string, what: string, maxBytes: number): Buffer {
  const flags = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOCTTY;
  let fd: number;
  try {
    fd = fs.openSync(file, flags);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENXIO") throw notRegular(what, file, "a socket");
    throw err;
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw notRegular(what, file, describeKind(stat));
    const chunks: Buffer[] = [];
    let total = 0;
    while (total <= maxBytes) {
      const buf = Buffer.alloc(64 * 1024);
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
    }
    if (total > maxBytes) throw tooLarge(what, file, maxBytes);
    return Buffer.concat(chunks);
  } finally {
    fs.closeSync(fd);
  }
}

/** Copies a regular file (see openRegularFile) to `dest`, which must not exist yet. */
export async function copyRegularFile(
  file: string,
  dest: string,
  what: string,
  opts: OpenRegularOptions = {},
): Promise<void> {
  const { handle, size } = await openRegularFile(file, what, opts);
  try {
    const out = fs.createWriteStream(dest, { flags: "wx", mode: 0o644 });
    // Up to the size that was checked: a file that grows while it is copied is not followed.
    if (size === 0)
      await new Promise<void>((resolve, reject) => out.end(resolve).on("error", reject));
    else
      await pipeline(handle.createReadStream({ autoClose: false, start: 0, end: size - 1 }), out);
  } finally {
    await handle.close();
  }
}
