// `banger system status`: for each user, whether the units are installed, enabled and active,
// and whether the helper and bangerd answer on their sockets.
import fs from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { defaultHelperSocket } from "../paths/helper-socket.js";
import type { SystemDeps, UserInfo } from "./system-deps.js";
import { DAEMON_UNIT, helperUnitName } from "./systemd-units.js";
import {
  isOurs,
  systemdRunning,
  systemUnitDir,
  unitDaemonSocket,
  unitState,
  userScope,
  userUnitDir,
} from "./unit-manager.js";
import { directFiles } from "./user-files.js";

export interface UnitStatus {
  unit: string;
  scope: "system" | "user";
  path: string;
  installed: boolean;
  /** null when systemd is not running or could not be asked. */
  enabled: boolean | null;
  active: boolean | null;
  socket: string;
  answers: boolean;
  detail: string;
}

export interface SystemStatus {
  systemdRunning: boolean;
  installs: Array<{ user: string; uid: number; helper: UnitStatus; daemon: UnitStatus }>;
}

export interface StatusOptions {
  user?: string;
}

/**
 * For one user (--user, the sudo user, or whoever runs it), or, for plain root, every user
 * with an installed helper unit.
 */
export async function systemStatus(
  deps: SystemDeps,
  opts: StatusOptions = {},
): Promise<SystemStatus> {
  const running = await systemdRunning(deps);
  let users: UserInfo[];
  const spec = opts.user || deps.env.SUDO_USER || (deps.euid !== 0 ? String(deps.euid) : null);
  if (spec !== null) {
    const user = await deps.lookupUser(spec);
    if (!user)
      throw new BangerError(
        ErrorCode.InvalidParams,
        `no user "${spec}"`,
        "pass --user with an existing user name or uid",
      );
    users = [user];
  } else {
    users = await installedUsers(deps);
  }
  const installs = [];
  for (const user of users) {
    const helperName = helperUnitName(user.name);
    const helperFile = path.join(systemUnitDir(deps), helperName);
    const daemonFile = path.join(userUnitDir(deps, user), DAEMON_UNIT);
    const helperSocket = defaultHelperSocket(user.uid);
    const daemonSocket = unitDaemonSocket(user);
    const helperProbe = await deps.probeHelper(helperSocket, user.uid);
    const daemonUp = await deps.daemonAnswers(daemonSocket);
    const none = { enabled: null, active: null };
    installs.push({
      user: user.name,
      uid: user.uid,
      helper: {
        unit: helperName,
        scope: "system" as const,
        path: helperFile,
        installed: await isOurs(directFiles, helperFile),
        ...(running ? await unitState(deps, [], helperName) : none),
        socket: helperSocket,
        answers: helperProbe.answers,
        detail: helperProbe.detail,
      },
      daemon: {
        unit: DAEMON_UNIT,
        scope: "user" as const,
        path: daemonFile,
        // Someone else's home may be unreadable to us: then we cannot tell.
        installed: await isOurs(deps.userFiles(user), daemonFile).catch(() => false),
        ...(running ? await unitState(deps, userScope(deps, user), DAEMON_UNIT) : none),
        socket: daemonSocket,
        answers: daemonUp,
        detail: daemonUp ? "bangerd answers" : "no bangerd answers",
      },
    });
  }
  return { systemdRunning: running, installs };
}

/** Users named by the helper units banger wrote. */
async function installedUsers(deps: SystemDeps): Promise<UserInfo[]> {
  const names = await fs.readdir(systemUnitDir(deps)).catch(() => [] as string[]);
  const users: UserInfo[] = [];
  for (const name of names.sort()) {
    const m = /^banger-helper-(.+)\.service$/.exec(name);
    if (!m?.[1] || !(await isOurs(directFiles, path.join(systemUnitDir(deps), name)))) continue;
    const user = await deps.lookupUser(m[1]);
    if (user) users.push(user);
  }
  return users;
}
