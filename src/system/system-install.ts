// `banger system install`: the helper's system unit and the user's bangerd unit, written,
// enabled and started; each user's helper gets its own bridge and subnet.
import fs from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { DEFAULT_BRIDGE, DEFAULT_SUBNET } from "../config/defaults.js";
import type { SystemDeps, UserInfo } from "./system-deps.js";
import {
  DAEMON_UNIT,
  daemonUnit,
  helperUnit,
  helperUnitName,
  helperUnitPin,
  UNIT_MARKER,
} from "./systemd-units.js";
import {
  requireRoot,
  systemctl,
  systemctlChecked,
  systemdRunning,
  systemUnitDir,
  targetUser,
  unitDaemonSocket,
  unitState,
  userScope,
  userUnitDir,
} from "./unit-manager.js";
import { directFiles, type UserFiles } from "./user-files.js";

function notRunningError(user: UserInfo): BangerError {
  return new BangerError(
    ErrorCode.Precondition,
    "systemd is not running on this machine (no /run/systemd/system), so there is no service manager to start banger's units",
    `run the helper by hand instead: sudo banger-helper --user ${user.name} &   (bangerd starts on demand); or write the unit files anyway with: sudo banger system install --user ${user.name} --no-start`,
  );
}

/** The unit directory in the user's home, made by the user: root only looks at the home itself. */
async function ensureUserDir(deps: SystemDeps, user: UserInfo, dir: string): Promise<void> {
  const home = path.join(deps.root, user.home);
  const homeStat = await fs.stat(home).catch(() => null);
  if (!homeStat?.isDirectory()) {
    throw new BangerError(
      ErrorCode.Precondition,
      `${user.name}'s home directory ${home} does not exist`,
      "create it first, or install for another user with --user",
    );
  }
  await deps.userFiles(user).mkdirs(dir);
}

/** Write only when the content differs; a temp file renamed over the target, never a half-written unit. */
async function writeUnit(files: UserFiles, file: string, content: string): Promise<boolean> {
  const current = await files.read(file);
  if (current.kind === "file" && current.content === content) return false;
  if (current.kind === "other") {
    throw new BangerError(
      ErrorCode.Precondition,
      `${file} exists and is not a regular file`,
      "remove it, then run the install again",
    );
  }
  if (current.kind === "file" && !current.content.startsWith(UNIT_MARKER)) {
    throw new BangerError(
      ErrorCode.AlreadyExists,
      `${file} exists and was not written by banger`,
      "move it away (banger will not overwrite it), then run the install again",
    );
  }
  await files.write(file, content);
  return true;
}

/**
 * Refuse to point a root service at code its user (or anyone but root) can edit: node, the
 * checkout and their parents must all be root-owned and not group- or world-writable.
 */
async function requireRootOwnedCode(deps: SystemDeps): Promise<void> {
  const problems: string[] = [];
  for (const p of [deps.nodePath, deps.installDir]) {
    const why = await deps.whyNotRootOwned(p);
    if (why) problems.push(why);
  }
  if (problems.length === 0) return;
  throw new BangerError(
    ErrorCode.Precondition,
    `banger-helper runs as root, so node and the banger checkout must be changeable by root only: ${problems.join("; ")}`,
    "install banger under a root-owned prefix, e.g. `sudo git clone <banger repo> /opt/banger && cd /opt/banger && sudo make build`, " +
      "and use a root-owned node (e.g. /usr/bin/node from your distribution, not one from nvm in your home); then run: sudo /opt/banger/bin/banger system install",
  );
}

export interface InstallOptions {
  user?: string;
  /** The helper's one bridge; default: what this user's unit has, else the first free banger<N>. */
  bridge?: string;
  /** The helper's one subnet; default: what this user's unit has, else the first free 172.30.<N>.0/24. */
  subnet?: string;
  /** Write (and, with systemd, enable) the units but start nothing. */
  noStart?: boolean;
}

/**
 * Write both units, reload, enable and start. Running it again with nothing changed writes
 * nothing and asks systemctl only questions.
 */
export async function installSystem(deps: SystemDeps, opts: InstallOptions = {}): Promise<void> {
  requireRoot(deps, "install");
  const user = await targetUser(deps, "install", opts.user);
  const running = await systemdRunning(deps);
  if (!running && !opts.noStart) throw notRunningError(user);
  await requireRootOwnedCode(deps);

  const helperName = helperUnitName(user.name);
  const helperFile = path.join(systemUnitDir(deps), helperName);
  const userDir = userUnitDir(deps, user);
  const daemonFile = path.join(userDir, DAEMON_UNIT);

  const pin = await choosePin(deps, user, opts);
  deps.say(`helper for ${user.name}: bridge ${pin.bridge}, subnet ${pin.subnet}`);
  await fs.mkdir(systemUnitDir(deps), { recursive: true, mode: 0o755 });
  const helperChanged = await writeUnit(directFiles, helperFile, helperUnit(user.name, deps, pin));
  deps.say(`${helperChanged ? "wrote" : "unchanged"} ${helperFile}`);
  await ensureUserDir(deps, user, userDir);
  const daemonChanged = await writeUnit(
    deps.userFiles(user),
    daemonFile,
    daemonUnit(user.name, deps),
  );
  deps.say(`${daemonChanged ? "wrote" : "unchanged"} ${daemonFile}`);

  if (!running) {
    deps.say(
      `systemd is not running: nothing enabled or started. Run the helper by hand meanwhile: sudo banger-helper --user ${user.name} &`,
    );
    return;
  }

  // The helper first: a daemon picks its networking when it starts.
  if (helperChanged) await systemctlChecked(deps, ["daemon-reload"]);
  await bringUp(deps, [], helperName, { changed: helperChanged, start: !opts.noStart });

  const scope = userScope(deps, user);
  const manual = `systemctl --user daemon-reload && systemctl --user enable ${opts.noStart ? "" : "--now "}${DAEMON_UNIT}`;
  const reload = daemonChanged ? await systemctl(deps, [...scope, "daemon-reload"]) : null;
  if (reload && reload.code !== 0) {
    deps.say(
      `could not reach ${user.name}'s systemd user manager (${(reload.stderr || reload.stdout).trim() || `status ${reload.code}`}).`,
    );
    deps.say(`As ${user.name}, run: ${manual}`);
    return;
  }
  let start = !opts.noStart;
  if (start && (await deps.daemonAnswers(unitDaemonSocket(user)))) {
    const state = await unitState(deps, scope, DAEMON_UNIT);
    if (state.active !== true) {
      // A bangerd started on demand holds the lock: the unit's would fail and retry.
      start = false;
      deps.say(
        `a bangerd started on demand is running for ${user.name}; the unit takes over at next login, or now after: banger daemon stop && systemctl --user start ${DAEMON_UNIT}`,
      );
    }
  }
  try {
    await bringUp(deps, scope, DAEMON_UNIT, { changed: daemonChanged, start }, `for ${user.name}`);
  } catch (err) {
    deps.say(err instanceof Error ? err.message : String(err));
    deps.say(`As ${user.name}, run: ${manual}`);
  }
}

/** The bridges and subnets of the other users' helper units banger wrote. */
async function otherPins(
  deps: SystemDeps,
  user: UserInfo,
): Promise<Array<{ user: string; bridge: string; subnet: string }>> {
  const names = await fs.readdir(systemUnitDir(deps)).catch(() => [] as string[]);
  const pins: Array<{ user: string; bridge: string; subnet: string }> = [];
  for (const name of names.sort()) {
    const m = /^banger-helper-(.+)\.service$/.exec(name);
    if (!m?.[1] || m[1] === user.name) continue;
    const file = await directFiles.read(path.join(systemUnitDir(deps), name));
    if (file.kind !== "file" || !file.content.startsWith(UNIT_MARKER)) continue;
    pins.push({ user: m[1], ...helperUnitPin(file.content) });
  }
  return pins;
}

/**
 * Each user's helper gets its own bridge and subnet: the ones asked for (refused when another
 * user's helper has them), else the ones this user's unit already has, else the first free
 * banger<N> / 172.30.<N>.0/24.
 */
async function choosePin(
  deps: SystemDeps,
  user: UserInfo,
  opts: InstallOptions,
): Promise<{ bridge: string; subnet: string }> {
  const others = await otherPins(deps, user);
  const clash = (bridge: string, subnet: string) =>
    others.find((o) => o.bridge === bridge || deps.subnetsOverlap(o.subnet, subnet));
  const own = await directFiles.read(path.join(systemUnitDir(deps), helperUnitName(user.name)));
  const current =
    own.kind === "file" && own.content.startsWith(UNIT_MARKER) ? helperUnitPin(own.content) : null;
  if (opts.bridge !== undefined || opts.subnet !== undefined || current) {
    const pin = deps.pinFor(
      opts.bridge ?? current?.bridge ?? DEFAULT_BRIDGE,
      opts.subnet ?? current?.subnet ?? DEFAULT_SUBNET,
    );
    const taken = clash(pin.bridge, pin.subnet);
    if (taken)
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `${taken.user}'s banger-helper already has bridge ${taken.bridge} with subnet ${taken.subnet}; ${user.name}'s helper needs its own (asked: ${pin.bridge} ${pin.subnet})`,
        "pass another --bridge and --subnet, or leave both out and install picks free ones",
      );
    const onHost = await deps.hostSubnetClash(pin.bridge, pin.subnet);
    if (onHost)
      throw new BangerError(
        ErrorCode.Precondition,
        `${user.name}'s banger-helper could not start with subnet ${pin.subnet}: ${onHost}`,
        "pass a free private --subnet (and --bridge), or leave both out and install picks free ones",
      );
    return { bridge: pin.bridge, subnet: pin.subnet };
  }
  for (let n = 0; n < 256; n++) {
    const bridge = `banger${n}`;
    const subnet = `172.30.${n}.0/24`;
    if (!clash(bridge, subnet) && !(await deps.hostSubnetClash(bridge, subnet)))
      return { bridge, subnet };
  }
  throw new BangerError(
    ErrorCode.Busy,
    "no free banger<N> bridge with a 172.30.<N>.0/24 subnet is left for another helper",
    "pass --bridge and --subnet yourself",
  );
}

/** Enable (and start) a unit only when it is not already; restart it when its file changed. */
async function bringUp(
  deps: SystemDeps,
  scope: string[],
  unit: string,
  opts: { changed: boolean; start: boolean },
  suffix = "",
): Promise<void> {
  const state = await unitState(deps, scope, unit);
  const label = suffix ? `${unit} ${suffix}` : unit;
  if (state.enabled !== true) {
    await systemctlChecked(deps, [...scope, "enable", ...(opts.start ? ["--now"] : []), unit]);
    deps.say(opts.start ? `enabled and started ${label}` : `enabled ${label} (not started)`);
    return;
  }
  if (!opts.start) return;
  if (state.active !== true) {
    await systemctlChecked(deps, [...scope, "start", unit]);
    deps.say(`started ${label}`);
  } else if (opts.changed) {
    await systemctlChecked(deps, [...scope, "restart", unit]);
    deps.say(`restarted ${label} (its unit changed)`);
  }
}
