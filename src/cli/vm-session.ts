import { Command } from "@commander-js/extra-typings";
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { StringDecoder } from "node:string_decoder";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { SessionInfo } from "../api/methods.js";
import { sessionError, sessionRemoteCommand, type SessionVerb } from "../guest/sessions.js";
import { loadGuestScripts } from "../guest/scripts.js";
import { endpointSshArgs, guestSshEnv } from "../guest/ssh.js";
import { describeGroup, ExitStatus, withDaemon, type CliDeps } from "./context.js";
import { visible } from "../util/terminal-text.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";

/** Ctrl-]: the key `attach` detaches on (telnet's escape; nothing else uses it). */
export const DETACH_KEY = 0x1d;
/** How long a detached or interrupted SSH stream may take to wind down before it is killed. */
const WIND_DOWN_MS = 5_000;

export function sessionCommand(deps: CliDeps): Command {
  const session = describeGroup(new Command("session"), {
    purpose:
      "Named long-running processes in a VM that outlive the SSH connection that started them: dev servers, watchers, REPLs.",
    examples: [
      "banger vm session start dev web -- python3 -m http.server 8000",
      "banger vm session logs dev web -f",
      "banger vm session send dev repl 'print(6 * 7)'",
      "banger vm session list dev",
    ],
    next: "'banger vm session stop <vm> <name>' when done; 'banger vm session attach <vm> <name>' to talk to it (Ctrl-] detaches).",
  });

  session
    .command("start")
    .description("Start a named process in the VM (the command goes after --)")
    .argument("<vm>", "a running VM")
    .argument("<name>", "session name: lower-case letters, digits, '_', '.', '-'")
    .argument("[cmd...]", "command and arguments, after --")
    .option(
      "--cwd <dir>",
      "directory in the guest to run in (default: the image's WorkingDir, else /root)",
    )
    .action(async (vm: string, name: string, cmd: string[], opts: { cwd?: string }) => {
      if (cmd.length === 0)
        throw new BangerError(
          ErrorCode.InvalidParams,
          "no command to start",
          `give it after --: 'banger vm session start ${vm} ${name} -- <cmd> [args...]'`,
        );
      const s = await withDaemon(deps, (c) =>
        c.call("vm.session.start", {
          vm,
          name,
          command: cmd,
          ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}),
        }),
      );
      if (s.state === "running") {
        deps.out.stdout.write(`${visible(s.name)} started (pid ${orDash(s.pid)})\n`);
        deps.out.stderr.write(
          `watch it: 'banger vm session logs ${vm} ${visible(s.name)} -f'; stop it: 'banger vm session stop ${vm} ${visible(s.name)}'\n`,
        );
      } else {
        deps.out.stdout.write(`${visible(s.name)} ${describeEnd(s)}\n`);
        deps.out.stderr.write(`its output: 'banger vm session logs ${vm} ${visible(s.name)}'\n`);
      }
    });

  session
    .command("list")
    .alias("ls")
    .description("List the sessions in a VM")
    .argument("<vm>")
    .option("--json", "print JSON")
    .action(async (vm: string, opts: { json?: boolean }) => {
      const list = await withDaemon(deps, (c) => c.call("vm.session.list", { vm }));
      if (opts.json) return printJson(deps.out, list);
      if (list.length === 0) {
        deps.out.stdout.write(
          `no sessions in ${vm}: start one with 'banger vm session start ${vm} <name> -- <cmd>'\n`,
        );
        return;
      }
      deps.out.stdout.write(
        formatTable(
          ["NAME", "STATE", "PID", "EXIT", "STARTED", "COMMAND"],
          list.map((s) => [
            s.name,
            s.state,
            orDash(s.pid),
            orDash(s.exitCode),
            orDash(s.startedAt),
            s.command,
          ]),
        ),
      );
    });

  session
    .command("show")
    .description("Show a session's state, pid, exit code, start time, command and cwd")
    .argument("<vm>")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (vm: string, name: string, opts: { json?: boolean }) => {
      const s = await withDaemon(deps, (c) => c.call("vm.session.show", { vm, name }));
      if (opts.json) return printJson(deps.out, s);
      deps.out.stdout.write(
        formatFields([
          ["name", s.name],
          ["state", s.state],
          ["pid", orDash(s.pid)],
          ["exit code", orDash(s.exitCode)],
          ["started", orDash(s.startedAt)],
          ["command", s.command],
          ["cwd", s.cwd],
        ]),
      );
    });

  session
    .command("logs")
    .description("Print a session's output (stdout and stderr, the newest 8 MiB are kept)")
    .argument("<vm>")
    .argument("<name>")
    .option("-f, --follow", "keep printing new output until the session ends (or Ctrl-C)")
    .option("--tail <bytes>", "only the last <bytes> bytes")
    .action(async (vm: string, name: string, opts: { follow?: boolean; tail?: string }) => {
      if (opts.follow) {
        if (opts.tail)
          throw new BangerError(ErrorCode.InvalidParams, "--tail and --follow do not mix");
        await followLogs(deps, vm, name);
        return;
      }
      const tailBytes = opts.tail === undefined ? undefined : parseTail(opts.tail);
      const r = await withDaemon(deps, (c) =>
        c.call("vm.session.logs", { vm, name, ...(tailBytes ? { tailBytes } : {}) }),
      );
      deps.out.stdout.write(Buffer.from(r.data, "base64"));
    });

  session
    .command("send")
    .description("Write text to a session's stdin, with a newline unless --no-newline")
    .argument("<vm>")
    .argument("<name>")
    .argument("<text>")
    .option("--no-newline", "send the text exactly, without a trailing newline")
    .action(async (vm: string, name: string, text: string, opts: { newline: boolean }) => {
      await withDaemon(deps, (c) =>
        c.call("vm.session.send", { vm, name, text: opts.newline ? `${text}\n` : text }),
      );
    });

  session
    .command("attach")
    .description(
      "Connect your terminal to a session's stdin and output; Ctrl-] detaches, the session keeps running",
    )
    .argument("<vm>")
    .argument("<name>")
    .action(async (vm: string, name: string) => {
      await attach(deps, vm, name);
    });

  session
    .command("stop")
    .description("Stop a session: SIGTERM to its process group, SIGKILL after --timeout")
    .argument("<vm>")
    .argument("<name>")
    .option("--timeout <seconds>", "how long to wait after SIGTERM before SIGKILL", "10")
    .action(async (vm: string, name: string, opts: { timeout: string }) => {
      const timeoutMs = parseTimeout(opts.timeout);
      const s = await withDaemon(deps, (c) => c.call("vm.session.stop", { vm, name, timeoutMs }));
      deps.out.stdout.write(`${visible(s.name)} ${describeEnd(s)}\n`);
    });

  session
    .command("kill")
    .description("Kill a session at once: SIGKILL to its process group")
    .argument("<vm>")
    .argument("<name>")
    .action(async (vm: string, name: string) => {
      const s = await withDaemon(deps, (c) => c.call("vm.session.kill", { vm, name }));
      deps.out.stdout.write(`${visible(s.name)} ${describeEnd(s)}\n`);
    });

  return session as unknown as Command;
}

function describeEnd(s: SessionInfo): string {
  if (s.state === "running") return `is still running (pid ${orDash(s.pid)})`;
  if (s.state === "lost") return "is lost (its processes are gone without an exit code)";
  const code = s.exitCode;
  if (code !== null && code > 128 && code < 160)
    return `exited with code ${code} (signal ${code - 128})`;
  return `exited with code ${orDash(code)}`;
}

export function parseTimeout(text: string): number {
  const seconds = Number(text.replace(/s$/, ""));
  if (!Number.isFinite(seconds) || seconds <= 0 || seconds > 3600)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid --timeout "${text}"`,
      "seconds, more than 0 and at most 3600, e.g. --timeout 30",
    );
  return Math.ceil(seconds * 1000);
}

export function parseTail(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid --tail "${text}"`,
      "a number of bytes, e.g. --tail 4096",
    );
  return n;
}

/** OpenSSH running one verb of the guest script, its output passed straight through (once per CLI run). */
async function spawnSessionScript(
  deps: CliDeps,
  vm: string,
  verb: SessionVerb,
): Promise<ChildProcessWithoutNullStreams> {
  const target = await withDaemon(deps, (c) => c.call("vm.ssh", { name: vm }));
  const args = [
    ...endpointSshArgs(vm, target, ["-o", "BatchMode=yes"]),
    sessionRemoteCommand(loadGuestScripts(), verb),
  ];
  const child = spawn("ssh", args, {
    stdio: ["pipe", "pipe", "pipe"],
    env: guestSshEnv(process.env),
  });
  child.stdout.on("data", (c: Buffer) => deps.out.stdout.write(c));
  child.stdin.on("error", () => {}); // ssh gone before we stop writing
  return child;
}

/** Resolves with ssh's exit status and stderr; rejects only when ssh cannot be started. */
function finished(
  child: ChildProcessWithoutNullStreams,
): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  // Only the end matters (an error quotes its last lines): a chatty guest cannot fill memory.
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr = (stderr + c.toString("utf8")).slice(-65536)));
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stderr }));
  });
}

/** A ssh child that must end within WIND_DOWN_MS of being asked to. */
function windDown(child: ChildProcessWithoutNullStreams, how: "end-stdin" | "signal"): void {
  if (how === "end-stdin") child.stdin.end();
  else child.kill("SIGTERM");
  setTimeout(() => child.kill("SIGKILL"), WIND_DOWN_MS).unref();
}

async function followLogs(deps: CliDeps, vm: string, name: string): Promise<void> {
  const child = await spawnSessionScript(deps, vm, { verb: "follow", name });
  child.stdin.end();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    windDown(child, "signal");
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const r = await finished(child);
    if (interrupted) throw new ExitStatus(130);
    if (r.code !== 0) throw sessionError(vm, name, r);
  } finally {
    process.removeListener("SIGINT", onSignal);
    process.removeListener("SIGTERM", onSignal);
  }
  const s = await withDaemon(deps, (c) => c.call("vm.session.show", { vm, name }));
  deps.out.stderr.write(`session ${name} ${describeEnd(s)}\n`);
}

/**
 * Local line editing for attach: the guest has no terminal, so echo, backspace and
 * Enter happen here; a finished line is sent with "\n". Returns what to send and echo.
 */
export class LineEditor {
  private line = "";
  /** Inside an escape sequence (arrow keys and the like), which are dropped: 1 after ESC, 2 in CSI. */
  private escape: 0 | 1 | 2 = 0;

  /** Feeds typed text; returns the bytes to send to the session and the text to echo. */
  feed(text: string): { send: string; echo: string; detach: boolean } {
    let send = "";
    let echo = "";
    for (const ch of text) {
      const code = ch.charCodeAt(0);
      if (code === DETACH_KEY) return { send, echo, detach: true };
      if (this.escape === 1) {
        this.escape = ch === "[" || ch === "O" ? 2 : 0;
        continue;
      }
      if (this.escape === 2) {
        if (code >= 0x40 && code <= 0x7e) this.escape = 0;
        continue;
      }
      if (code === 0x1b) {
        this.escape = 1;
        continue;
      }
      if (ch === "\r" || ch === "\n") {
        send += `${this.line}\n`;
        echo += "\n"; // the terminal keeps output processing: "\n" is a new line
        this.line = "";
      } else if (code === 0x7f || code === 0x08) {
        if (this.line.length > 0) {
          this.line = [...this.line].slice(0, -1).join("");
          echo += "\b \b";
        }
      } else if (code === 0x03) {
        // Ctrl-C: drop the line being typed (the session gets no signal: 'session stop' does that).
        this.line = "";
        echo += "^C\n";
      } else if (code === 0x04) {
        // Ctrl-D: send what is typed so far without a newline.
        send += this.line;
        this.line = "";
      } else if (code >= 0x20 || ch === "\t") {
        this.line += ch;
        echo += ch;
      }
    }
    return { send, echo, detach: false };
  }
}

async function attach(deps: CliDeps, vm: string, name: string): Promise<void> {
  const before = await withDaemon(deps, (c) => c.call("vm.session.show", { vm, name }));
  if (before.state !== "running")
    throw new BangerError(
      ErrorCode.InvalidState,
      `session ${name} is not running: it ${describeEnd(before)}`,
      `'banger vm session logs ${vm} ${name}' shows its output`,
    );
  const child = await spawnSessionScript(deps, vm, { verb: "attach", name });
  const done = finished(child);
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  let detached = false;
  const detach = () => {
    if (detached) return;
    detached = true;
    windDown(child, "end-stdin");
  };
  const editor = new LineEditor();
  const decoder = new StringDecoder("utf8");
  const onData = (chunk: Buffer) => {
    if (!tty) {
      child.stdin.write(chunk);
      return;
    }
    const r = editor.feed(decoder.write(chunk));
    if (r.send) child.stdin.write(r.send);
    if (r.echo) deps.out.stdout.write(r.echo);
    if (r.detach) detach();
  };
  const restore = () => {
    if (tty) stdin.setRawMode(false);
  };
  const onSignal = () => {
    detach();
    child.kill("SIGTERM");
  };
  if (tty) {
    deps.out.stderr.write(
      `attached to session ${name} in ${vm}: type a line and Enter to send it; Ctrl-] detaches (the session keeps running)\n`,
    );
    stdin.setRawMode(true);
  }
  process.once("exit", restore);
  process.once("SIGTERM", onSignal);
  process.once("SIGHUP", onSignal);
  stdin.on("data", onData);
  stdin.once("end", detach);
  stdin.resume();
  try {
    const r = await done;
    if (!detached && r.code !== 0) throw sessionError(vm, name, r);
  } finally {
    stdin.removeListener("data", onData);
    stdin.removeListener("end", detach);
    stdin.pause();
    restore();
    process.removeListener("exit", restore);
    process.removeListener("SIGTERM", onSignal);
    process.removeListener("SIGHUP", onSignal);
  }
  if (detached) {
    if (tty) deps.out.stderr.write(`\ndetached from ${name}; it keeps running\n`);
    return;
  }
  const s = await withDaemon(deps, (c) => c.call("vm.session.show", { vm, name }));
  deps.out.stderr.write(`\nsession ${name} ${describeEnd(s)}\n`);
}
