import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { isStaticElf } from "../kernel/initramfs.js";
import type { CommandRunner } from "../system/runner.js";
import { TOOLKIT_DIR } from "../config/defaults.js";

/**
 * The guest toolkit: host files banger copies under /usr/lib/banger/ of every image, so any
 * image boots offline whatever libc it has, or none. busybox-static is the shell, init tools,
 * ip and tar; dropbear is the SSH server for images without sshd, with the libraries and the
 * loader it was linked against beside it: the copies name lib/ld.so as their interpreter and run
 * with LD_LIBRARY_PATH=lib, so nothing of the image's libc is used; dropbear clears the
 * environment of its sessions, so nothing leaks into them.
 */

/** The loader ldd must name; x86_64 is the only architecture banger boots. */
export const TOOLKIT_LOADER = "ld-linux-x86-64.so.2";
/**
 * What the copied dropbear and dropbearkey name as their ELF interpreter (a link to the copied
 * loader; short enough to fit where /lib64/ld-linux-x86-64.so.2 was). dropbear re-executes
 * its own binary for every connection: through the image's loader (minbase has one) it found
 * none of its libraries and every connection died.
 */
export const TOOLKIT_INTERPRETER = `/${TOOLKIT_DIR}/lib/ld.so`;
/**
 * root's login shell in images that have none (guest-scripts/login-shell.sh): busybox sh with
 * busybox's applets on PATH after the image's own tools, which the SSH server's PATH lacks.
 */
export const TOOLKIT_SHELL = `/${TOOLKIT_DIR}/login-shell`;

/**
 * How banger asks a guest to power off: systemd's way, the image's poweroff, else busybox's
 * (which signals banger's init; images without systemd often have no poweroff of their own).
 */
export const GUEST_POWEROFF_COMMAND = `systemctl poweroff || poweroff || /${TOOLKIT_DIR}/bin/busybox poweroff`;

/** A host file copied into the image. */
export interface ToolkitFile {
  /** Inside the image, relative to its root. */
  path: string;
  /** On the host. */
  source: string;
  mode: number;
  /** Set for executables whose PT_INTERP is rewritten to this loader as they are copied. */
  interpreter?: string;
}

/**
 * `elf` with its PT_INTERP path replaced in place by `interpreter` (NUL-padded), which must
 * fit in the old one's space: no section or segment moves.
 */
export function withInterpreter(elf: Buffer, interpreter: string, what: string): Buffer {
  const refuse = (why: string) =>
    new BangerError(ErrorCode.Precondition, `cannot copy ${what} into the image: ${why}`);
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1)
    throw refuse("it is not a 64-bit little-endian ELF file");
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 0x28 > elf.length) break;
    if (elf.readUInt32LE(at) !== 3 /* PT_INTERP */) continue;
    const offset = Number(elf.readBigUInt64LE(at + 0x08));
    const size = Number(elf.readBigUInt64LE(at + 0x20));
    const bytes = Buffer.from(interpreter);
    if (offset + size > elf.length) throw refuse("its PT_INTERP lies outside the file");
    if (bytes.length + 1 > size)
      throw refuse(`${interpreter} does not fit its ${size - 1}-byte interpreter path`);
    const out = Buffer.from(elf);
    out.fill(0, offset, offset + size);
    bytes.copy(out, offset);
    return out;
  }
  throw refuse("it has no PT_INTERP (not a dynamically linked executable)");
}

/** What `hostToolkit` found: the files to copy, and busybox's applets (a `bin/<name>` link each). */
export interface HostToolkit {
  files: ToolkitFile[];
  applets: string[];
}

/** Applet names as `busybox --list` prints them: `[`, `[[`, `run-parts`, ... never a path. */
export function parseAppletList(stdout: string): string[] {
  const names = stdout.split("\n").filter((n) => n !== "");
  for (const name of names)
    if (!/^[a-z0-9_.[-]+$/.test(name) || name === "." || name === "..")
      throw new BangerError(
        ErrorCode.Precondition,
        `busybox --list printed ${JSON.stringify(name)}, which is not an applet name`,
      );
  return names.filter((n) => n !== "busybox");
}

/** Where the host's toolkit binaries are: Debian's busybox-static and dropbear-bin. */
export interface ToolkitSources {
  busybox: string;
  dropbear: string;
  dropbearkey: string;
}

export const HOST_TOOLKIT: ToolkitSources = {
  busybox: "/bin/busybox",
  dropbear: "/usr/sbin/dropbear",
  dropbearkey: "/usr/bin/dropbearkey",
};

/** The shared objects `ldd` names for a binary: by soname, the loader apart. */
export function parseLdd(
  stdout: string,
  binary: string,
): { libs: Map<string, string>; loader: string } {
  const libs = new Map<string, string>();
  let loader = "";
  for (const raw of stdout.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("linux-vdso") || line.includes("statically linked"))
      continue;
    const linked = /^(\S+) => (\S+) \(0x[0-9a-f]+\)$/.exec(line);
    const bare = /^(\/\S+) \(0x[0-9a-f]+\)$/.exec(line);
    if (linked) libs.set(linked[1]!, linked[2]!);
    else if (bare) loader = bare[1]!;
    else
      throw new BangerError(
        ErrorCode.Precondition,
        `cannot copy ${binary} into the image: ldd says ${JSON.stringify(line)}`,
        "reinstall it: sudo apt-get install --reinstall dropbear-bin",
      );
  }
  if (path.basename(loader) !== TOOLKIT_LOADER)
    throw new BangerError(
      ErrorCode.Precondition,
      `cannot copy ${binary} into the image: its loader is ${loader || "not named by ldd"}, not ${TOOLKIT_LOADER}`,
    );
  return { libs, loader };
}

async function present(file: string, pkg: string, why: string): Promise<void> {
  const stat = await fsp.stat(file).catch(() => null);
  if (!stat?.isFile())
    throw new BangerError(
      ErrorCode.Precondition,
      `${file} is missing (banger copies it into every image: ${why})`,
      `sudo apt-get install ${pkg}`,
    );
}

/**
 * The files of the toolkit, found on the host when an image is finalised. The libraries are
 * read with ldd then, not fixed when banger is built: they are always the ones the installed
 * dropbear was linked against, also after an apt upgrade of either.
 */
export async function hostToolkit(
  runner: CommandRunner,
  sources: ToolkitSources = HOST_TOOLKIT,
): Promise<HostToolkit> {
  await present(sources.busybox, "busybox-static", "the shell, init tools, ip and tar");
  if (!isStaticElf(await fsp.readFile(sources.busybox)))
    throw new BangerError(
      ErrorCode.Precondition,
      `${sources.busybox} is not statically linked (banger's toolkit must run without the image's libc)`,
      "sudo apt-get install busybox-static",
    );
  // Debian's busybox runs no applet from PATH by itself: each one needs its link in bin/.
  const list = await runner.run(sources.busybox, ["--list"]);
  if (list.code !== 0)
    throw new BangerError(
      ErrorCode.Precondition,
      `${sources.busybox} --list failed: ${list.stderr.trim()}`,
    );
  const applets = parseAppletList(list.stdout);
  const bin = `${TOOLKIT_DIR}/bin`;
  const lib = `${TOOLKIT_DIR}/lib`;
  const files: ToolkitFile[] = [{ path: `${bin}/busybox`, source: sources.busybox, mode: 0o755 }];
  const libs = new Map<string, string>();
  for (const [name, source] of [
    ["dropbear", sources.dropbear],
    ["dropbearkey", sources.dropbearkey],
  ] as const) {
    await present(source, "dropbear-bin", "the SSH server for images without sshd");
    const r = await runner.run("ldd", [source]);
    if (r.code !== 0)
      throw new BangerError(
        ErrorCode.Precondition,
        `ldd ${source} failed: ${r.stderr.trim() || r.stdout.trim()}`,
      );
    const found = parseLdd(r.stdout, source);
    for (const [soname, file] of found.libs) libs.set(soname, file);
    libs.set(TOOLKIT_LOADER, found.loader);
    files.push({ path: `${bin}/${name}`, source, mode: 0o755, interpreter: TOOLKIT_INTERPRETER });
  }
  for (const [soname, file] of [...libs].sort(([a], [b]) => a.localeCompare(b)))
    files.push({ path: `${lib}/${soname}`, source: file, mode: 0o755 });
  return { files, applets };
}
