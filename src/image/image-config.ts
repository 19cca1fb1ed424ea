import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageConfig } from "../api/methods.js";
import { HOSTILE_NAME } from "./oci/layer-path.js";

/**
 * The part of an image's OCI config banger keeps: Entrypoint, Cmd, Env, WorkingDir,
 * ExposedPorts and User, validated. The config is untrusted JSON: a field of the wrong
 * type refuses the image (it is not an image any tool would make); an entry banger cannot
 * apply safely is dropped and named in `warnings`, so the image still works and says so.
 */

/** Bounds on what is kept: far above real images (python:3.12 sets 6 variables). */
export const CONFIG_LIMITS = {
  /** Entries of each list (Env, Entrypoint, Cmd, ExposedPorts). */
  maxEntries: 256,
  /** Bytes of the summary as JSON, all fields together. */
  maxBytes: 64 * 1024,
} as const;

/** A name a POSIX shell can export: what `export "$line"` accepts, nothing that could parse as code. */
export const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/**
 * Names a shell owns: bash refuses to set its read-only ones (`export UID=1` exits a POSIX-mode
 * bash, /bin/sh on Fedora and RHEL), and the rest change how the shell itself runs. An image
 * setting one is dropped with a warning (docs/images.md lists them).
 */
export const SHELL_OWNED_ENV: ReadonlySet<string> = new Set([
  ...["UID", "EUID", "PPID", "BASHOPTS", "SHELLOPTS", "BASH_VERSINFO"],
  ...["GROUPS", "BASHPID", "BASH_ARGC", "BASH_ARGV", "BASH_LINENO", "BASH_SOURCE", "FUNCNAME"],
  ...["BASH_COMMAND", "BASH_SUBSHELL", "DIRSTACK", "PIPESTATUS", "HISTCMD"],
  ...["LINENO", "OPTIND", "OPTARG", "IFS", "PS4"],
]);
const PORT = /^[0-9]{1,5}(\/(tcp|udp|sctp))?$/;

/** An image without a config, or one that sets nothing: what `image build` images also have. */
export const EMPTY_CONFIG: ImageConfig = {
  entrypoint: null,
  cmd: null,
  env: [],
  workingDir: null,
  exposedPorts: [],
  user: null,
  warnings: [],
};

function refuse(what: string, detail: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `${what}: ${detail}; nothing was installed`,
    "the image's config is malformed: rebuild it with a current tool",
  );
}

/** The summary as it is, or refused past CONFIG_LIMITS.maxBytes as JSON. */
function withinBytes(summary: ImageConfig, what: string, takes: string): ImageConfig {
  const bytes = Buffer.byteLength(JSON.stringify(summary));
  if (bytes > CONFIG_LIMITS.maxBytes)
    throw refuse(what, `${takes} ${bytes} bytes, more than ${CONFIG_LIMITS.maxBytes}`);
  return summary;
}

function stringList(what: string, field: string, value: unknown): string[] | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string"))
    throw refuse(what, `${field} is not a list of strings`);
  if (value.length > CONFIG_LIMITS.maxEntries)
    throw refuse(
      what,
      `${field} has ${value.length} entries, more than ${CONFIG_LIMITS.maxEntries}`,
    );
  return value as string[];
}

function optionalString(what: string, field: string, value: unknown): string | null {
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string") throw refuse(what, `${field} is not a string`);
  return value;
}

/** A short, visible form of an untrusted value for a warning (the CLI escapes it as well). */
function quoted(value: string): string {
  const cut = value.length > 60 ? `${value.slice(0, 60)}...` : value;
  return JSON.stringify(cut);
}

/** Env entries banger can write one per line and export literally; the rest are dropped with a reason. */
function checkEnv(list: string[], warnings: string[]): string[] {
  const kept: string[] = [];
  for (const entry of list) {
    const eq = entry.indexOf("=");
    const key = eq < 0 ? entry : entry.slice(0, eq);
    if (eq < 0 || !ENV_KEY.test(key))
      warnings.push(`Env entry ${quoted(entry)} dropped: not KEY=VALUE with a shell variable name`);
    else if (SHELL_OWNED_ENV.has(key))
      warnings.push(
        `Env ${key} dropped: the shell owns this variable (bash refuses or misuses it)`,
      );
    else if (/[\n\r\0]/.test(entry))
      warnings.push(
        `Env ${key} dropped: its value holds a newline or NUL, which cannot be applied`,
      );
    else kept.push(entry);
  }
  return kept;
}

/** Why a WorkingDir cannot be made and entered as it is (the rule layer names follow), or null. */
function workingDirProblem(dir: string): string | null {
  if (!dir.startsWith("/")) return "not an absolute path";
  if (HOSTILE_NAME.test(dir)) return "it holds a control character or a double quote";
  const parts = dir.split("/");
  if (parts.includes("..")) return "it has a '..' component";
  if (parts.some((p) => Buffer.byteLength(p) > 255) || Buffer.byteLength(dir) > 4000)
    return "a component is longer than Linux allows (255 bytes)";
  return null;
}

/**
 * The summary of an OCI image config (`{ config: { Env, ... } }`, as pulled or imported).
 * `what` names the image for errors. Throws on a malformed config or one past the bounds.
 */
export function summariseImageConfig(json: Record<string, unknown>, what: string): ImageConfig {
  const raw = json.config;
  if (raw === undefined || raw === null) return { ...EMPTY_CONFIG, warnings: [] };
  if (typeof raw !== "object" || Array.isArray(raw))
    throw refuse(what, "its config is not an object");
  const c = raw as Record<string, unknown>;
  const warnings: string[] = [];
  const env = checkEnv(stringList(what, "Env", c.Env) ?? [], warnings);

  let workingDir = optionalString(what, "WorkingDir", c.WorkingDir);
  const badDir = workingDir === null ? null : workingDirProblem(workingDir);
  if (workingDir !== null && badDir !== null) {
    warnings.push(`WorkingDir ${quoted(workingDir)} dropped: ${badDir}`);
    workingDir = null;
  }

  const ports = c.ExposedPorts;
  if (ports !== undefined && ports !== null && (typeof ports !== "object" || Array.isArray(ports)))
    throw refuse(what, "ExposedPorts is not an object");
  const portNames = Object.keys((ports as Record<string, unknown> | null | undefined) ?? {});
  if (portNames.length > CONFIG_LIMITS.maxEntries)
    throw refuse(
      what,
      `ExposedPorts has ${portNames.length} entries, more than ${CONFIG_LIMITS.maxEntries}`,
    );
  const exposedPorts: string[] = [];
  for (const p of portNames) {
    if (PORT.test(p)) exposedPorts.push(p);
    else warnings.push(`ExposedPorts entry ${quoted(p)} dropped: not PORT or PORT/PROTO`);
  }

  const summary: ImageConfig = {
    entrypoint: stringList(what, "Entrypoint", c.Entrypoint),
    cmd: stringList(what, "Cmd", c.Cmd),
    env,
    workingDir,
    exposedPorts,
    user: optionalString(what, "User", c.User),
    warnings,
  };
  return withinBytes(
    summary,
    what,
    "its Entrypoint, Cmd, Env, WorkingDir, ExposedPorts and User take",
  );
}

/**
 * A summary kept elsewhere (a catalog bundle's manifest.json, which only has the shape checked)
 * put through the same rules: what they drop is dropped with a warning, after its own warnings.
 */
export function recheckImageConfig(kept: ImageConfig, what: string): ImageConfig {
  const again = summariseImageConfig(
    {
      config: {
        Entrypoint: kept.entrypoint,
        Cmd: kept.cmd,
        Env: kept.env,
        WorkingDir: kept.workingDir,
        ExposedPorts: Object.fromEntries(kept.exposedPorts.map((p) => [p, {}])),
        User: kept.user,
      },
    },
    what,
  );
  const merged = { ...again, warnings: [...kept.warnings, ...again.warnings] };
  return withinBytes(merged, what, "with its warnings it takes");
}
