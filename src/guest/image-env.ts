import { shellQuote } from "./ssh.js";
import { TOOLKIT_DIR } from "../config/defaults.js";

/**
 * The image's OCI Env and WorkingDir in the guest: finalisation writes them as data
 * (`image.env`, one KEY=VALUE a line; `image.workdir`), and guest-scripts/image-env.sh,
 * sourced before what banger runs for the user, exports each line literally and sets
 * `banger_workdir`. banger's own commands (probes, workspaces, stop) never source it.
 * Paths are relative to the image's root, as the other guest assets.
 */
export const IMAGE_ENV_SCRIPT = `${TOOLKIT_DIR}/image-env.sh`;
export const IMAGE_ENV_FILE = `${TOOLKIT_DIR}/image.env`;
export const IMAGE_WORKDIR_FILE = `${TOOLKIT_DIR}/image.workdir`;
/** Sourced by /etc/profile after it sets its own PATH, so a login shell keeps the image's. */
export const IMAGE_ENV_PROFILE = "etc/profile.d/banger-image-env.sh";

/** Shell text applying the image's env where it runs; nothing on images without the script. */
export const SOURCE_IMAGE_ENV = `[ -r /${IMAGE_ENV_SCRIPT} ] && . /${IMAGE_ENV_SCRIPT}`;

/**
 * The script the guest runs for a user command (`vm run`, `vm ssh`): the image's env, cd
 * into `dir` (a workspace) or else the image's WorkingDir (else it stays in the user's home,
 * where the SSH server starts it), check the command exists (a clear error instead of a bare
 * "not found"), then exec it with every argument quoted, so `-- sh -c 'a && b'` reaches the
 * guest as three words. No command: a login shell, the one the SSH server picked (the user's
 * from passwd), taken before the image's Env, whose SHELL must not choose it.
 */
export function remoteCommand(dir: string | null, cmd: string[]): string {
  const cd =
    dir === null
      ? `{ [ -z "$banger_workdir" ] || cd "$banger_workdir" || exit 1; }`
      : `cd ${shellQuote(dir)} || exit 1`;
  const setup = `banger_shell=$SHELL; banger_workdir=; ${SOURCE_IMAGE_ENV}; ${cd}`;
  if (cmd.length === 0) return `${setup}; exec "\${banger_shell:-/bin/sh}" -l`;
  const first = cmd[0]!;
  const hint = /\s/.test(first) ? " (to run a shell snippet, use: -- sh -c '...')" : "";
  const notFound = `banger: the command could not be started in the VM: ${first}: not found${hint}`;
  return [
    setup,
    `command -v ${shellQuote(first)} >/dev/null 2>&1 || { printf '%s\\n' ${shellQuote(notFound)} >&2; exit 127; }`,
    `exec ${cmd.map(shellQuote).join(" ")}`,
  ].join("; ");
}
