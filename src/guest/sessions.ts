import { BangerError, ErrorCode } from "../api/errors.js";
import { tailLines } from "../util/terminal-text.js";
import { scriptArgv, scriptRemoteCommand, type GuestScripts } from "./scripts.js";
import { shellQuote } from "./ssh.js";

/**
 * Guest side of `banger vm session`: one POSIX sh script (guest-scripts/session.sh; dash and
 * busybox ash, no bash, GNU options, perl or python) run over SSH as
 * `sh -c <script> banger-session <verb> <base> <name> ...`.
 *
 * A session is a directory <base>/<name>/ holding:
 *   cmd, cwd, started-at, boot-id   what was started, where and when (display form of cmd)
 *   supervise.sh                    guest-scripts/session-supervisor.sh, sent along with `start`
 *   supervisor, pid                 the detached supervisor and the command (its own process group)
 *   exit-code                       written by the supervisor when the command ends
 *   stdin                           a FIFO the supervisor holds open, so the command never reads EOF between sends
 *   out.fifo                        the command's stdout+stderr, drained into output by the supervisor
 *   output, output.1, gen           the newest output, the half before it, and how many times it rotated
 * The supervisor runs under setsid with /dev/null as stdio: the SSH connection
 * that started it can go away. Output is capped: when `output` reaches half the
 * cap it becomes `output.1` (replacing the older half), so the newest output is kept.
 */

/** Where sessions live in the guest: on the work disk mounted at /root. */
export const GUEST_SESSIONS_DIR = "/root/.banger/sessions";
/** Output kept per session in the guest (the newest bytes). */
export const DEFAULT_OUTPUT_CAP_BYTES = 8 * 1024 * 1024;
export const MIN_OUTPUT_CAP_BYTES = 1024 * 1024;
/** Exit status the script uses for errors it explains on stderr (`exit 3` in session.sh). */
export const SESSION_ERROR_STATUS = 3;

export const SESSION_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

export type SessionState = "running" | "exited" | "lost";

export interface SessionRecord {
  name: string;
  state: SessionState;
  pid: number | null;
  exitCode: number | null;
  startedAt: string | null;
  cwd: string;
  command: string;
}

export function validateSessionName(name: string): void {
  if (!SESSION_NAME.test(name))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid session name "${name}"`,
      "use lower-case letters, digits, '_', '.' and '-', starting with a letter or digit, at most 63",
    );
}

/** The one-line form of a command shown by list/show: shell-quoted, control characters escaped. */
export function displayCommand(argv: string[]): string {
  return argv
    .map(shellQuote)
    .join(" ")
    .replace(/[\x00-\x1f\x7f]/g, (c) =>
      c === "\n"
        ? "\\n"
        : c === "\t"
          ? "\\t"
          : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
    );
}

export type SessionVerb =
  | { verb: "start"; name: string; capBytes: number; cwd: string; command: string[] }
  | { verb: "list" }
  | { verb: "show"; name: string }
  | { verb: "logs"; name: string; tailBytes: number }
  | { verb: "send"; name: string }
  | { verb: "stop"; name: string; timeoutMs: number }
  | { verb: "kill"; name: string }
  | { verb: "follow"; name: string }
  | { verb: "attach"; name: string };

/** The two scripts a session needs: the verbs, and the supervisor `start` installs. */
export type SessionScripts = Pick<GuestScripts, "session" | "sessionSupervisor">;

/** Arguments after `sh -c <script> banger-session`. */
export function sessionScriptArgs(scripts: SessionScripts, base: string, v: SessionVerb): string[] {
  switch (v.verb) {
    case "start":
      return [
        "start",
        base,
        v.name,
        String(v.capBytes),
        v.cwd,
        displayCommand(v.command),
        scripts.sessionSupervisor,
        ...v.command,
      ];
    case "list":
      return ["list", base];
    case "logs":
      return ["logs", base, v.name, String(v.tailBytes)];
    case "stop":
      return ["stop", base, v.name, String(Math.max(1, Math.ceil(v.timeoutMs / 100)))];
    default:
      return [v.verb, base, v.name];
  }
}

/** argv that runs one verb with the given shell (`["sh"]`, `["busybox", "sh"]`, ...). */
export function sessionArgv(
  scripts: SessionScripts,
  shell: string[],
  base: string,
  v: SessionVerb,
): string[] {
  return scriptArgv(shell, scripts.session, "banger-session", sessionScriptArgs(scripts, base, v));
}

/** The remote command line for OpenSSH (the guest's login shell parses it; the script runs under sh). */
export function sessionRemoteCommand(
  scripts: SessionScripts,
  v: SessionVerb,
  base = GUEST_SESSIONS_DIR,
): string {
  return scriptRemoteCommand(
    scripts.session,
    "banger-session",
    sessionScriptArgs(scripts, base, v),
  );
}

/** Lines of `name state pid exit started cwd cmd` (tab-separated; cmd last, it is free text). */
export function parseSessionRecords(text: string): SessionRecord[] {
  const out: SessionRecord[] = [];
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    const cols = line.split("\t");
    if (cols.length < 7) throw malformed(`a record of ${cols.length} fields`, line);
    const [name, state, pid, exit, startedAt, cwd] = cols as [
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    if (state !== "running" && state !== "exited" && state !== "lost")
      throw malformed("an unknown state", line);
    // Longer digit strings are no pid or exit code (and would not even be safe integers).
    const int = (s: string) => (/^\d{1,10}$/.test(s) ? Number(s) : null);
    out.push({
      name,
      state,
      pid: int(pid),
      exitCode: int(exit),
      startedAt: startedAt || null,
      cwd,
      command: cols.slice(6).join("\t"),
    });
  }
  return out;
}

/** A session record the script would never print: the guest is not running banger's script as sent. */
function malformed(what: string, line: string): BangerError {
  const shown = line.length > 200 ? `${line.slice(0, 200)}...` : line;
  return new BangerError(
    ErrorCode.Internal,
    `the guest answered with ${what} where a session record belongs: ${JSON.stringify(shown)}`,
    "the guest's sh or coreutils do not behave as expected; 'banger vm ssh <vm>' to look",
  );
}

/** `banger-session: <kind>: <message>` from the script's stderr, or null for anything else. */
export function parseSessionError(stderr: string): { kind: string; message: string } | null {
  const m = /^banger-session: ([a-z]+): (.*)$/m.exec(stderr);
  return m ? { kind: m[1]!, message: m[2]! } : null;
}

/** Maps a failed guest call to an error that says what to do next. */
export function sessionError(
  vm: string,
  name: string | null,
  r: { code: number | null; signal: string | null; stderr: string },
): BangerError {
  const explained = r.code === SESSION_ERROR_STATUS ? parseSessionError(r.stderr) : null;
  const n = name ?? "<name>";
  if (explained) {
    const { kind, message } = explained;
    switch (kind) {
      case "notfound":
        return new BangerError(
          ErrorCode.NotFound,
          `${message} in VM ${vm}`,
          `'banger vm session list ${vm}' shows what exists`,
        );
      case "exists":
        return new BangerError(
          ErrorCode.AlreadyExists,
          message,
          `stop it first ('banger vm session stop ${vm} ${n}') or pick another name`,
        );
      case "state":
        return new BangerError(
          ErrorCode.InvalidState,
          message,
          `'banger vm session show ${vm} ${n}' says how it ended; 'banger vm session start ${vm} ${n} -- <cmd>' runs it again`,
        );
      case "nocmd":
        return new BangerError(
          ErrorCode.InvalidParams,
          message,
          "give the full path, or install the command in the image",
        );
      case "nocwd":
        return new BangerError(
          ErrorCode.InvalidParams,
          message,
          `create it first ('banger vm ssh ${vm} -- mkdir -p <dir>') or pick another --cwd`,
        );
      case "invalid":
        return new BangerError(ErrorCode.InvalidParams, message);
      case "precondition":
        return new BangerError(
          ErrorCode.Precondition,
          message,
          "sessions need setsid, mkfifo, dd, tail, head and base64 in the guest (util-linux and coreutils, or busybox)",
        );
      default:
        return new BangerError(ErrorCode.Internal, `${message} (VM ${vm})`);
    }
  }
  const tail = tailLines(r.stderr);
  if (r.code === 255)
    return new BangerError(
      ErrorCode.Internal,
      `could not reach VM ${vm} over SSH${tail ? `: ${tail}` : ""}`,
      `'banger vm health ${vm}' checks it`,
    );
  const status = r.signal
    ? `was killed by ${r.signal} (timed out?)`
    : `exited with status ${r.code}`;
  return new BangerError(
    ErrorCode.Internal,
    `the session script in VM ${vm} ${status}${tail ? `:\n${tail}` : ""}`,
  );
}
