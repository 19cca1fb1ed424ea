import { BangerError, ErrorCode } from "../api/errors.js";
import {
  DEFAULT_OUTPUT_CAP_BYTES,
  GUEST_SESSIONS_DIR,
  MIN_OUTPUT_CAP_BYTES,
  parseSessionRecords,
  sessionError,
  sessionRemoteCommand,
  validateSessionName,
  type SessionRecord,
  type SessionScripts,
  type SessionVerb,
} from "../guest/sessions.js";
import { loadGuestScripts } from "../guest/scripts.js";
import { GuestShell } from "../guest/shell.js";
import type { GuestTarget } from "../guest/ssh.js";
import type { CommandResult, CommandRunner } from "../system/runner.js";
import { tailLines } from "../util/terminal-text.js";

export interface SessionServiceDeps {
  /** Validates that a VM runs and snapshots its SSH target; serialises guest work per VM. */
  vms: {
    guestTarget(name: string): Promise<GuestTarget>;
    exclusive<T>(kind: string, vmId: string, fn: () => Promise<T>): Promise<T>;
  };
  runner: CommandRunner;
  /** Where sessions live in the guest. */
  guestDir?: string;
  /** Output kept per session in the guest (newest bytes). */
  outputCapBytes?: number;
  /** Bound on one plain guest call (start, list, send, ...). */
  callTimeoutMs?: number;
  /** The guest scripts; read from guest-scripts/ once, here, when not given. */
  scripts?: SessionScripts;
}

export const DEFAULT_STOP_TIMEOUT_MS = 10_000;

/**
 * `vm.session.*`: named processes in a guest. All state lives in the guest
 * (see src/guest/sessions.ts); each call is one SSH round trip made outside the
 * VM's lifecycle lock, so stop/delete never wait behind it.
 */
export class SessionService {
  private readonly guestDir: string;
  private readonly capBytes: number;
  private readonly scripts: SessionScripts;
  private readonly shell: GuestShell;

  constructor(private readonly deps: SessionServiceDeps) {
    this.shell = new GuestShell(deps.runner);
    this.scripts = deps.scripts ?? loadGuestScripts();
    this.guestDir = deps.guestDir ?? GUEST_SESSIONS_DIR;
    this.capBytes = Math.max(MIN_OUTPUT_CAP_BYTES, deps.outputCapBytes ?? DEFAULT_OUTPUT_CAP_BYTES);
  }

  async start(
    vm: string,
    name: string,
    command: string[],
    cwd: string | undefined,
  ): Promise<SessionRecord> {
    validateSessionName(name);
    if (command.length === 0 || command[0] === "")
      throw new BangerError(
        ErrorCode.InvalidParams,
        "no command to start",
        `give it after --: 'banger vm session start ${vm} ${name} -- <cmd> [args...]'`,
      );
    // No --cwd: "" tells the guest script to use the image's WorkingDir, else /root.
    const dir = cwd ?? "";
    if (cwd === "" || /[\x00-\x1f\x7f]/.test(dir))
      throw new BangerError(
        ErrorCode.InvalidParams,
        `invalid --cwd ${JSON.stringify(dir)}`,
        "a directory path in the guest without control characters",
      );
    const target = await this.deps.vms.guestTarget(vm);
    return this.deps.vms.exclusive(`session:${name}`, target.vmId, async () =>
      this.one(
        target,
        name,
        await this.exec(target, name, {
          verb: "start",
          name,
          capBytes: this.capBytes,
          cwd: dir,
          command,
        }),
      ),
    );
  }

  async list(vm: string): Promise<SessionRecord[]> {
    const target = await this.deps.vms.guestTarget(vm);
    return parseSessionRecords((await this.exec(target, null, { verb: "list" })).stdout);
  }

  async show(vm: string, name: string): Promise<SessionRecord> {
    validateSessionName(name);
    const target = await this.deps.vms.guestTarget(vm);
    return this.one(target, name, await this.exec(target, name, { verb: "show", name }));
  }

  /** The newest `tailBytes` of kept output (all of it by default), base64: output need not be UTF-8. */
  async logs(
    vm: string,
    name: string,
    tailBytes: number | undefined,
  ): Promise<{ name: string; data: string; bytes: number }> {
    validateSessionName(name);
    const target = await this.deps.vms.guestTarget(vm);
    // The guest keeps at most capBytes per session: its base64 is all an honest guest sends.
    const r = await this.exec(
      target,
      name,
      { verb: "logs", name, tailBytes: Math.min(tailBytes ?? this.capBytes, this.capBytes) },
      { maxOutputBytes: base64Bytes(this.capBytes) + 64 * 1024 },
    );
    const bytes = Buffer.from(r.stdout.replace(/\s/g, ""), "base64");
    return { name, data: bytes.toString("base64"), bytes: bytes.length };
  }

  /** Writes `text` to the session's stdin exactly as given. */
  async send(vm: string, name: string, text: string): Promise<{ name: string; bytes: number }> {
    validateSessionName(name);
    const data = Buffer.from(text, "utf8");
    const target = await this.deps.vms.guestTarget(vm);
    await this.exec(target, name, { verb: "send", name }, { input: data });
    return { name, bytes: data.length };
  }

  /** SIGTERM to the session's process group, SIGKILL once `timeoutMs` has passed. */
  async stop(vm: string, name: string, timeoutMs: number | undefined): Promise<SessionRecord> {
    validateSessionName(name);
    const timeout = timeoutMs ?? DEFAULT_STOP_TIMEOUT_MS;
    const target = await this.deps.vms.guestTarget(vm);
    return this.deps.vms.exclusive(`session:${name}`, target.vmId, async () =>
      this.one(
        target,
        name,
        await this.exec(
          target,
          name,
          { verb: "stop", name, timeoutMs: timeout },
          { timeoutMs: timeout + 30_000 },
        ),
      ),
    );
  }

  async kill(vm: string, name: string): Promise<SessionRecord> {
    validateSessionName(name);
    const target = await this.deps.vms.guestTarget(vm);
    return this.deps.vms.exclusive(`session:${name}`, target.vmId, async () =>
      this.one(target, name, await this.exec(target, name, { verb: "kill", name })),
    );
  }

  private one(target: GuestTarget, name: string, r: CommandResult): SessionRecord {
    const [record] = parseSessionRecords(r.stdout);
    if (!record)
      throw new BangerError(
        ErrorCode.Internal,
        `session ${name} in ${target.vmName} gave no state: ${tailLines(r.stderr)}`,
      );
    return record;
  }

  /** One verb of the guest script over SSH; its explained errors become BangerErrors with a next step. */
  private async exec(
    target: GuestTarget,
    name: string | null,
    verb: SessionVerb,
    opts: { input?: Buffer; timeoutMs?: number; maxOutputBytes?: number } = {},
  ): Promise<CommandResult> {
    const command = sessionRemoteCommand(this.scripts, verb, this.guestDir);
    const r = await this.shell.run(target, command, {
      what: `'session ${verb.verb}'`,
      timeoutMs: opts.timeoutMs ?? this.deps.callTimeoutMs ?? 60_000,
      ...(opts.maxOutputBytes !== undefined ? { maxOutputBytes: opts.maxOutputBytes } : {}),
      ...(opts.input ? { input: opts.input } : {}),
    });
    if (r.code === 0) return r;
    throw sessionError(target.vmName, name, r);
  }
}

/** Length of `base64` output for n bytes, with its newline every 76 characters. */
function base64Bytes(n: number): number {
  const chars = Math.ceil(n / 3) * 4;
  return chars + Math.ceil(chars / 76);
}
