import { BangerError, ErrorCode } from "../api/errors.js";
import { tailLines } from "../util/terminal-text.js";
import { shellQuote } from "./ssh.js";

/**
 * Guest side of `banger vm session`: one POSIX sh script (dash and busybox ash;
 * no bash, GNU options, perl or python) run over SSH as
 * `sh -c <script> banger-session <verb> <base> <name> ...`.
 *
 * A session is a directory <base>/<name>/ holding:
 *   cmd, cwd, started-at, boot-id   what was started, where and when (display form of cmd)
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
/** Exit status the script uses for errors it explains on stderr. */
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

// The supervisor, written into each session directory by `start` and run detached.
// $1 = session dir, $2 = output cap in bytes, the rest = the command.
const SUPERVISOR = `
d=$1; cap=$2; shift 2
limit=$((cap / 2 - 262144))
size() { set -- $(ls -ln "$1" 2>/dev/null); echo "\${5:-0}"; }
# Copies the command's output into $d/output one dd at a time (dd never reads more
# than it writes, so nothing is lost between two of them); rotates at half the cap.
collect() {
  gen=0
  while :; do
    before=$(size "$d/output")
    dd bs=65536 count=4 >>"$d/output" 2>/dev/null
    after=$(size "$d/output")
    [ "$after" = "$before" ] && return 0
    if [ "$after" -ge "$limit" ]; then
      mv -f "$d/output" "$d/output.1"
      : >"$d/output"
      gen=$((gen + 1))
      echo "$gen" >"$d/gen.tmp" && mv -f "$d/gen.tmp" "$d/gen"
    fi
  done
}
IFS= read -r cwd <"$d/cwd"
cd "$cwd" || exit 1
# Held open (read-write, so opening never blocks) for the command's whole life.
exec 3<>"$d/stdin"
collect <"$d/out.fifo" 3>&- &
collector=$!
setsid "$@" <"$d/stdin" >"$d/out.fifo" 2>&1 3>&- &
pid=$!
echo "$pid" >"$d/pid.tmp" && mv -f "$d/pid.tmp" "$d/pid"
wait "$pid"
code=$?
exec 3>&-
# Let the collector drain the last output; bounded, as a child of the command may keep the pipe open.
i=0
while [ $i -lt 30 ] && kill -0 "$collector" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
echo "$code" >"$d/exit-code.tmp" && mv -f "$d/exit-code.tmp" "$d/exit-code"
`;

const SCRIPT = `
me=banger-session
die() { printf '%s: %s: %s\\n' "$me" "$1" "$2" >&2; exit ${SESSION_ERROR_STATUS}; }
size() { set -- $(ls -ln "$1" 2>/dev/null); echo "\${5:-0}"; }
nap() { sleep 0.1 2>/dev/null || sleep 1; }
bootid() { cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown; }
field() { v=; [ -f "$d/$1" ] && IFS= read -r v <"$d/$1"; printf '%s' "$v"; }
# Sets st to running, exited or lost (and pid) for the session in $d.
state() {
  pid=$(field pid)
  if [ -f "$d/exit-code" ]; then st=exited; return; fi
  if [ "$(field boot-id)" != "$(bootid)" ]; then st=lost; return; fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then st=running; return; fi
  sup=$(field supervisor)
  if [ -n "$sup" ] && kill -0 "$sup" 2>/dev/null; then st=running; return; fi
  # The supervisor writes exit-code before it exits: look again now that it is gone.
  if [ -f "$d/exit-code" ]; then st=exited; else st=lost; fi
}
record() {
  state
  printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "\${d##*/}" "$st" "$pid" "$(field exit-code)" \\
    "$(field started-at)" "$(field cwd)" "$(field cmd)"
}
session() {
  case $2 in ''|.*|*/*) die invalid "invalid session name '$2'" ;; esac
  d=$1/$2
  [ -d "$d" ] || die notfound "no session named '$2'"
}
running() {
  state
  [ "$st" = running ] || die state "session '\${d##*/}' is not running ($st)"
}
# Waits up to $1 tenths of a second for the session to stop running.
await_end() {
  i=0
  while [ $i -lt "$1" ]; do
    state
    [ "$st" = running ] || return 0
    nap
    i=$((i + 1))
  done
  state
  [ "$st" != running ]
}
findcmd() {
  case $1 in */*) [ -f "$1" ] && [ -x "$1" ]; return ;; esac
  old=$IFS; IFS=:
  for p in $PATH; do
    if [ -f "\${p:-.}/$1" ] && [ -x "\${p:-.}/$1" ]; then IFS=$old; return 0; fi
  done
  IFS=$old
  return 1
}
# Prints bytes [$2, $3) of file $1.
emit() { tail -c +$(($2 + 1)) "$1" 2>/dev/null | head -c $(($3 - $2)); }
# Prints the output from the start (or, for attach, from $gen/$off set by the caller)
# until the session is no longer running (or, for attach, the attaching shell is gone).
follow() {
  if [ "$1" = start ]; then
    gen=$(field gen); gen=\${gen:-0}
    [ "$gen" -gt 0 ] && cat "$d/output.1" 2>/dev/null
    off=0
  fi
  while :; do
    [ "$1" = start ] || kill -0 "$$" 2>/dev/null || return 0
    state
    g=$(field gen); g=\${g:-0}
    if [ "$g" != "$gen" ]; then
      # The file being read became output.1: print the rest of it, then go on with the new one.
      [ "$g" -eq $((gen + 1)) ] && tail -c +$((off + 1)) "$d/output.1" 2>/dev/null
      gen=$g; off=0
      continue
    fi
    s=$(size "$d/output")
    if [ "$s" -gt "$off" ]; then emit "$d/output" "$off" "$s" || return 0; off=$s; fi
    [ "$st" = running ] || return 0
    nap; nap; nap
  done
}

verb=$1; shift
case $verb in
start)
  base=$1; name=$2; cap=$3; cwd=$4; display=$5; shift 5
  command -v setsid >/dev/null 2>&1 || die precondition "setsid is not installed in the guest"
  command -v mkfifo >/dev/null 2>&1 || die precondition "mkfifo is not installed in the guest"
  [ -d "$cwd" ] || die nocwd "no directory '$cwd' in the guest"
  cwd=$(cd "$cwd" && pwd -P) || die nocwd "cannot enter '$cwd' in the guest"
  (cd "$cwd" && findcmd "$1") || die nocmd "'$1' is not an executable command in the guest (looked in PATH from $cwd)"
  case $name in ''|.*|*/*) die invalid "invalid session name '$name'" ;; esac
  mkdir -p "$base" || die internal "cannot create $base"
  d=$base/$name
  if [ -d "$d" ]; then
    state
    [ "$st" = running ] && die exists "session '$name' is already running (pid $pid)"
    rm -rf "$d"
  fi
  mkdir "$d" 2>/dev/null || die exists "session '$name' is being started by someone else"
  printf '%s\\n' "$display" >"$d/cmd"
  printf '%s\\n' "$cwd" >"$d/cwd"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$d/started-at"
  bootid >"$d/boot-id"
  echo 0 >"$d/gen"
  : >"$d/output"
  mkfifo "$d/stdin" "$d/out.fifo" || die internal "mkfifo failed in $d"
  cat >"$d/supervise.sh" <<'BANGER_SUPERVISOR'
${SUPERVISOR}
BANGER_SUPERVISOR
  setsid sh "$d/supervise.sh" "$d" "$cap" "$@" </dev/null >/dev/null 2>&1 &
  echo $! >"$d/supervisor"
  i=0
  while [ ! -f "$d/pid" ] && [ $i -lt 100 ]; do
    kill -0 "$(field supervisor)" 2>/dev/null || break
    nap; i=$((i + 1))
  done
  [ -f "$d/pid" ] || die internal "the supervisor of '$name' did not start the command"
  record
  ;;
list)
  [ -d "$1" ] || exit 0
  for d in "$1"/*; do
    [ -d "$d" ] && record
  done
  ;;
show)
  session "$1" "$2"
  record
  ;;
logs)
  session "$1" "$2"
  { [ "$(field gen)" != 0 ] && cat "$d/output.1" 2>/dev/null; cat "$d/output"; } | tail -c "$3" | base64
  ;;
send)
  session "$1" "$2"
  running
  # Read-write open: never blocks, and the supervisor's own open keeps the command from seeing EOF.
  dd bs=65536 1<>"$d/stdin" 2>/dev/null
  ;;
stop)
  session "$1" "$2"
  running
  kill -TERM -"$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  if ! await_end "$3"; then
    kill -KILL -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    await_end 100 || die internal "session '$2' is still running after SIGKILL"
  fi
  record
  ;;
kill)
  session "$1" "$2"
  running
  kill -KILL -"$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  await_end 100 || die internal "session '$2' is still running after SIGKILL"
  record
  ;;
follow)
  session "$1" "$2"
  follow start
  ;;
attach)
  session "$1" "$2"
  running
  # Where the output ends now: what the attached user sends is answered after this point.
  gen=$(field gen); gen=\${gen:-0}
  off=$(size "$d/output")
  exec 4<&0
  follow attached &
  follower=$!
  # dd, not cat: busybox cat may sendfile(), which holds typed bytes back until EOF.
  dd bs=4096 <&4 1<>"$d/stdin" 2>/dev/null &
  forwarder=$!
  exec 4<&-
  # Ends when the session ends (follower done) or the client detaches (stdin closed).
  while kill -0 "$follower" 2>/dev/null && kill -0 "$forwarder" 2>/dev/null; do nap; nap; done
  kill "$follower" "$forwarder" 2>/dev/null
  wait
  ;;
*)
  die invalid "unknown verb '$verb'"
  ;;
esac
`;

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

/** Arguments after `sh -c <script> banger-session`. */
export function sessionScriptArgs(base: string, v: SessionVerb): string[] {
  switch (v.verb) {
    case "start":
      return [
        "start",
        base,
        v.name,
        String(v.capBytes),
        v.cwd,
        displayCommand(v.command),
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
export function sessionArgv(shell: string[], base: string, v: SessionVerb): string[] {
  return [...shell, "-c", SCRIPT, "banger-session", ...sessionScriptArgs(base, v)];
}

/** The remote command line for OpenSSH (the guest's login shell parses it; the script runs under sh). */
export function sessionRemoteCommand(v: SessionVerb, base = GUEST_SESSIONS_DIR): string {
  return sessionArgv(["sh"], base, v).map(shellQuote).join(" ");
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
