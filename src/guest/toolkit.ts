import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { isStaticElf } from "../kernel/initramfs.js";
import type { CommandRunner } from "../system/runner.js";

/**
 * The guest toolkit: host files banger copies under /usr/lib/banger/ of every image, so any
 * image boots offline whatever libc it has, or none. busybox-static is the shell, init tools,
 * ip and tar; dropbear is the SSH server for images without sshd, with the libraries and the
 * loader it was linked against beside it (run as `lib/ld-linux-x86-64.so.2 --library-path lib
 * bin/dropbear`, so nothing of the image's libc is used and nothing leaks into its sessions).
 */

export const TOOLKIT_DIR = "usr/lib/banger";
/** The loader every guest-script names; x86_64 is the only architecture banger boots. */
export const TOOLKIT_LOADER = "ld-linux-x86-64.so.2";
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
    files.push({ path: `${bin}/${name}`, source, mode: 0o755 });
  }
  for (const [soname, file] of [...libs].sort(([a], [b]) => a.localeCompare(b)))
    files.push({ path: `${lib}/${soname}`, source: file, mode: 0o755 });
  return { files, applets };
}
