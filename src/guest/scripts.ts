import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BangerError, ErrorCode } from "../api/errors.js";
import { shellQuote } from "./ssh.js";

/**
 * The shell that runs in guests and in the initramfs lives in real files under the top-level
 * guest-scripts/ folder, shipped beside dist/ the way catalog/ is. Values reach them as
 * positional arguments (or, for the initramfs, a data file), never spliced into the text.
 */

/** guest-scripts/, found from this module: src/guest/ under tsx, dist/guest/ once built. */
export const GUEST_SCRIPTS_DIR = fileURLToPath(new URL("../../guest-scripts/", import.meta.url));

/** Each script by what it is, and its file. */
export const GUEST_SCRIPT_FILES = {
  /** /usr/lib/banger/network-setup: addresses, DNS and hostname from the kernel command line. */
  networkSetup: "network-setup.sh",
  /** /usr/lib/banger/first-boot: fresh SSH host keys, for the image's sshd or banger's dropbear. */
  firstBoot: "first-boot.sh",
  /** /usr/lib/banger/init: boots an image without systemd. */
  init: "init.sh",
  /** /usr/lib/banger/ssh-server: the image's sshd, else banger's dropbear, in the foreground. */
  sshServer: "ssh-server.sh",
  /** /usr/lib/banger/login-shell: root's shell in images without one. */
  loginShell: "login-shell.sh",
  /** /usr/lib/banger/image-env.sh: sourced before user commands, exports the image's OCI Env. */
  imageEnv: "image-env.sh",
  /** /etc/profile.d/banger-image-env.sh in images with an Env or WorkingDir: login shells apply them. */
  imageProfile: "image-profile.sh",
  /** /etc/profile in images that have none but set an Env or WorkingDir: sources /etc/profile.d. */
  minimalProfile: "profile.sh",
  /** /init of banger's initramfs. */
  initramfsInit: "initramfs-init.sh",
  /** `banger vm session` verbs, run over SSH with `sh -c`. */
  session: "session.sh",
  /** Written into each session's directory by `session.sh start` and run detached. */
  sessionSupervisor: "session-supervisor.sh",
  /** `banger vm workspace` import and export, run over SSH with `sh -c`. */
  workspace: "workspace.sh",
  /** The identity reader a snapshot's clones find in memory (guest/identity.ts starts it). */
  identity: "identity.sh",
} as const;

export type GuestScripts = { readonly [K in keyof typeof GUEST_SCRIPT_FILES]: string };

/**
 * Reads every guest script once; services keep the value they were given (or read at
 * construction) and hand it to the functions that build guest commands, images and initramfs.
 */
export function loadGuestScripts(dir: string = GUEST_SCRIPTS_DIR): GuestScripts {
  const read = (file: string): string => {
    try {
      return fs.readFileSync(path.join(dir, file), "utf8");
    } catch (err) {
      throw new BangerError(
        ErrorCode.Internal,
        `cannot read banger's guest script ${path.join(dir, file)}: ${(err as Error).message}`,
        "banger's installation is incomplete: guest-scripts/ belongs beside dist/ and catalog/",
      );
    }
  };
  const entries = Object.entries(GUEST_SCRIPT_FILES).map(([key, file]) => [key, read(file)]);
  return Object.freeze(Object.fromEntries(entries)) as GuestScripts;
}

/** argv running a guest script with `shell`: `sh -c <script> <name> <args>...` ($0 is `name`). */
export function scriptArgv(
  shell: string[],
  script: string,
  name: string,
  args: string[],
): string[] {
  return [...shell, "-c", script, name, ...args];
}

/** The same under the guest's `sh`, as the one string OpenSSH hands to the login shell. */
export function scriptRemoteCommand(script: string, name: string, args: string[]): string {
  return scriptArgv(["sh"], script, name, args).map(shellQuote).join(" ");
}
