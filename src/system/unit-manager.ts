// What install, uninstall and status share: where units live, which user is meant, and what
// systemctl says.
import fs from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import { resolveLayout } from "../paths/layout.js";
import type { SystemDeps, UserInfo } from "./system-deps.js";
import { isUnitSafeUserName, UNIT_MARKER } from "./systemd-units.js";
import type { UserFiles } from "./user-files.js";

const SYSTEMCTL_TIMEOUT_MS = 60_000;

export async function systemdRunning(deps: SystemDeps): Promise<boolean> {
  const st = await fs.stat(path.join(deps.root, "run/systemd/system")).catch(() => null);
  return st?.isDirectory() === true;
}

export function systemUnitDir(deps: SystemDeps): string {
  return path.join(deps.root, "etc/systemd/system");
}

export function userUnitDir(deps: SystemDeps, user: UserInfo): string {
  return path.join(deps.root, user.home, ".config/systemd/user");
}

/** The socket the unit's bangerd listens on: the user manager sets XDG_RUNTIME_DIR=/run/user/<uid>. */
export function unitDaemonSocket(user: UserInfo): string {
  return resolveLayout({ XDG_RUNTIME_DIR: `/run/user/${user.uid}` }, user.home).socketFile;
}

/** `systemctl --user` for that user: directly when we are them, through their manager when root. */
export function userScope(deps: SystemDeps, user: UserInfo): string[] {
  return deps.euid === user.uid ? ["--user"] : ["--user", "-M", `${user.name}@`];
}

export function requireRoot(deps: SystemDeps, command: string): void {
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
export async function targetUser(
  deps: SystemDeps,
  command: string,
  explicit?: string,
): Promise<UserInfo> {
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

export async function systemctl(deps: SystemDeps, args: string[]) {
  return deps.runner.run("systemctl", args, { timeoutMs: SYSTEMCTL_TIMEOUT_MS });
}

/** Run a systemctl verb that must work; the error carries systemctl's own words. */
export async function systemctlChecked(deps: SystemDeps, args: string[]): Promise<void> {
  const r = await systemctl(deps, args);
  if (r.code === 0) return;
  throw new BangerError(
    ErrorCode.Internal,
    `systemctl ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim() || `status ${r.code}`}`,
    "see 'banger system status' and 'journalctl -u <unit>'",
  );
}

/** enabled/active from systemctl; null when it could not say (manager unreachable). */
export async function unitState(
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

export async function isOurs(files: UserFiles, file: string): Promise<boolean> {
  const current = await files.read(file);
  return current.kind === "file" && current.content.startsWith(UNIT_MARKER);
}
