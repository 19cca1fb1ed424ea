import fs from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { defaultHelperSocket } from "../net/helper-protocol.js";
import { cidrsOverlap, makePin } from "../net/pin.js";
import { resolveLayout } from "../paths/layout.js";
import type { CommandRunner } from "./runner.js";
import {
  DAEMON_UNIT,
  daemonUnit,
  helperUnit,
  helperUnitName,
  helperUnitPin,
  isUnitSafeUserName,
  UNIT_MARKER,
  type UnitPaths,
} from "./systemd-units.js";
import { directFiles, type UserFiles } from "./user-files.js";

import type { UserInfo } from "./users.js";

export type { UserInfo };

/** Everything `banger system` touches outside itself; tests install into a temp root with a fake systemctl. */
export interface SystemDeps extends UnitPaths {
  /** Prefix of every file path: "/" for real, a temp dir in tests. */
  root: string;
  /** Runs systemctl. */
  runner: CommandRunner;
  env: Readonly<Record<string, string | undefined>>;
  euid: number;
  lookupUser(spec: string): Promise<UserInfo | null>;
  /** File steps in the user's home, done as that user: root never writes where they can swap paths. */
  userFiles(user: UserInfo): UserFiles;
  /** Why root must not run code from this path (someone else can change it), or null when it may. */
  whyNotRootOwned(path: string): Promise<string | null>;
  /** Whether banger-helper answers on this socket for this uid, and what it said. */
  probeHelper(socket: string, uid: number): Promise<{ answers: boolean; detail: string }>;
  /** Whether a bangerd answers on this socket. */
  daemonAnswers(socket: string): Promise<boolean>;
  /**
   * Why the host cannot give this subnet to a helper (it overlaps a route or address the host
   * already has), or null: the helper checks the same at start and would refuse to run.
   */
  hostSubnetClash(bridge: string, subnet: string): Promise<string | null>;
  /** One line of what was done, for the user. */
  say(line: string): void;
}

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

const SYSTEMCTL_TIMEOUT_MS = 60_000;

async function systemdRunning(deps: SystemDeps): Promise<boolean> {
  const st = await fs.stat(path.join(deps.root, "run/systemd/system")).catch(() => null);
  return st?.isDirectory() === true;
}

function systemUnitDir(deps: SystemDeps): string {
  return path.join(deps.root, "etc/systemd/system");
}

function userUnitDir(deps: SystemDeps, user: UserInfo): string {
  return path.join(deps.root, user.home, ".config/systemd/user");
}

/** The socket the unit's bangerd listens on: the user manager sets XDG_RUNTIME_DIR=/run/user/<uid>. */
function unitDaemonSocket(user: UserInfo): string {
  return resolveLayout({ XDG_RUNTIME_DIR: `/run/user/${user.uid}` }, user.home).socketFile;
}

/** `systemctl --user` for that user: directly when we are them, through their manager when root. */
function userScope(deps: SystemDeps, user: UserInfo): string[] {
  return deps.euid === user.uid ? ["--user"] : ["--user", "-M", `${user.name}@`];
}

function requireRoot(deps: SystemDeps, command: string): void {
  if (deps.euid === 0) return;
  throw new BangerError(
    ErrorCode.Precondition,
    `banger system ${command} must run as root: it writes to /etc/systemd/system and manages a root service`,
    `run it with sudo: sudo banger system ${command}`,
  );
}

/**
 * --user, else the user who ran sudo. Plain root without --user is refused: guessing would
 * hand a root helper to the wrong account.
 */
async function targetUser(deps: SystemDeps, command: string, explicit?: string): Promise<UserInfo> {
  const spec = explicit || deps.env.SUDO_USER;
  if (!spec) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `banger system ${command} does not know which user to ${command === "install" ? "install for" : "act for"}`,
      `name the user who runs banger: sudo banger system ${command} --user <name>`,
    );
  }
  const user = await deps.lookupUser(spec);
  if (!user) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `no user "${spec}"`,
      "pass --user with an existing user name or uid",
    );
  }
  if (user.uid === 0) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      "banger needs no units for root: a root bangerd runs the privileged steps itself",
      `install for the user who runs banger: sudo banger system ${command} --user <name>`,
    );
  }
  if (!isUnitSafeUserName(user.name)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `the user name "${user.name}" cannot be used in a systemd unit name`,
      "run banger-helper by hand instead: sudo banger-helper --user <uid> (see docs/helper.md)",
    );
  }
  return user;
}

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

async function systemctl(deps: SystemDeps, args: string[]) {
  return deps.runner.run("systemctl", args, { timeoutMs: SYSTEMCTL_TIMEOUT_MS });
}

/** Run a systemctl verb that must work; the error carries systemctl's own words. */
async function systemctlChecked(deps: SystemDeps, args: string[]): Promise<void> {
  const r = await systemctl(deps, args);
  if (r.code === 0) return;
  throw new BangerError(
    ErrorCode.Internal,
    `systemctl ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim() || `status ${r.code}`}`,
    "see 'banger system status' and 'journalctl -u <unit>'",
  );
}

/** enabled/active from systemctl; null when it could not say (manager unreachable). */
async function unitState(
  deps: SystemDeps,
  scope: string[],
  unit: string,
): Promise<{ enabled: boolean | null; active: boolean | null }> {
  const word = async (verb: string) =>
    (await systemctl(deps, [...scope, verb, unit])).stdout.trim().split("\n")[0] ?? "";
  const enabled = await word("is-enabled");
  const active = await word("is-active");
  const known = (w: string, yes: string[], no: string[]) =>
    yes.includes(w) ? true : no.includes(w) ? false : null;
  return {
    enabled: known(
      enabled,
      ["enabled", "enabled-runtime", "linked", "linked-runtime", "alias"],
      ["disabled", "static", "indirect", "masked", "masked-runtime", "generated", "transient"],
    ),
    active: known(
      active,
      ["active", "reloading", "activating"],
      ["inactive", "failed", "deactivating", "maintenance"],
    ),
  };
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
    others.find((o) => o.bridge === bridge || cidrsOverlap(o.subnet, subnet));
  const own = await directFiles.read(path.join(systemUnitDir(deps), helperUnitName(user.name)));
  const current =
    own.kind === "file" && own.content.startsWith(UNIT_MARKER) ? helperUnitPin(own.content) : null;
  if (opts.bridge !== undefined || opts.subnet !== undefined || current) {
    const pin = makePin(
      opts.bridge ?? current?.bridge ?? "banger0",
      opts.subnet ?? current?.subnet ?? "172.30.0.0/24",
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

async function isOurs(files: UserFiles, file: string): Promise<boolean> {
  const current = await files.read(file);
  return current.kind === "file" && current.content.startsWith(UNIT_MARKER);
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
