// `banger system uninstall`: stops, disables and removes exactly the units install wrote.
import path from "node:path";
import type { SystemDeps } from "./system-deps.js";
import { DAEMON_UNIT, helperUnitName } from "./systemd-units.js";
import {
  isOurs,
  requireRoot,
  systemctl,
  systemctlChecked,
  systemdRunning,
  systemUnitDir,
  targetUser,
  userScope,
  userUnitDir,
} from "./unit-manager.js";
import { directFiles, type UserFiles } from "./user-files.js";

export interface UninstallOptions {
  user?: string;
}

/** Stop, disable and remove exactly the files install wrote; a second run finds nothing to do. */
export async function uninstallSystem(
  deps: SystemDeps,
  opts: UninstallOptions = {},
): Promise<void> {
  requireRoot(deps, "uninstall");
  const user = await targetUser(deps, "uninstall", opts.user);
  const running = await systemdRunning(deps);
  const helperName = helperUnitName(user.name);
  const helperFile = path.join(systemUnitDir(deps), helperName);
  const userDir = userUnitDir(deps, user);
  const daemonFile = path.join(userDir, DAEMON_UNIT);
  const userFiles = deps.userFiles(user);
  let removed = 0;

  // The daemon first: it uses the helper. Its VMs keep running (KillMode=process).
  if (await isOurs(userFiles, daemonFile)) {
    const scope = userScope(deps, user);
    if (running) {
      const r = await systemctl(deps, [...scope, "disable", "--now", DAEMON_UNIT]);
      if (r.code !== 0)
        deps.say(
          `could not reach ${user.name}'s systemd user manager; a bangerd it started keeps running until: banger daemon stop`,
        );
    }
    await removeWantsLink(
      userFiles,
      path.join(userDir, "default.target.wants", DAEMON_UNIT),
      daemonFile,
    );
    await userFiles.remove(daemonFile);
    deps.say(`removed ${daemonFile}`);
    removed++;
    if (running) await systemctl(deps, [...scope, "daemon-reload"]);
  } else {
    await reportForeign(deps, userFiles, daemonFile);
  }

  if (await isOurs(directFiles, helperFile)) {
    if (running) await systemctlChecked(deps, ["disable", "--now", helperName]);
    await removeWantsLink(
      directFiles,
      path.join(systemUnitDir(deps), "multi-user.target.wants", helperName),
      helperFile,
    );
    await directFiles.remove(helperFile);
    deps.say(`removed ${helperFile}`);
    removed++;
    if (running) await systemctlChecked(deps, ["daemon-reload"]);
  } else {
    await reportForeign(deps, directFiles, helperFile);
  }
  if (removed === 0) deps.say(`nothing to remove: no banger units are installed for ${user.name}`);
}

async function reportForeign(deps: SystemDeps, files: UserFiles, file: string): Promise<void> {
  if ((await files.read(file)).kind !== "none")
    deps.say(`left ${file} alone: banger did not write it`);
}

/** The enable symlink, when systemctl could not remove it (no systemd, unreachable user manager). */
async function removeWantsLink(files: UserFiles, link: string, target: string): Promise<void> {
  const dest = await files.readlink(link);
  if (dest !== null && path.resolve(path.dirname(link), dest) === path.resolve(target))
    await files.remove(link);
}
