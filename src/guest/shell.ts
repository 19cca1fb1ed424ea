import type { CommandResult, CommandRunner } from "../system/runner.js";
import { GUEST_REPLY_MAX_BYTES, rethrowGuestOutput } from "./output.js";
import { guestSshArgs, type GuestTarget } from "./ssh.js";

/** One call into a guest: `what` names it in the error when its output passes the cap. */
export interface GuestCall {
  what: string;
  timeoutMs: number;
  /** Per stream; default GUEST_REPLY_MAX_BYTES. */
  maxOutputBytes?: number;
  input?: string | Buffer;
  signal?: AbortSignal;
}

/**
 * The one way the daemon runs something in a guest over SSH: banger's key, no ssh config,
 * BatchMode and keep-alives (a guest that goes away mid-call must not hold ssh until its
 * deadline), and output capped by the runner.
 */
export class GuestShell {
  constructor(private readonly runner: CommandRunner) {}

  /** ssh's argv for one non-interactive command in the guest (for callers that stream). */
  argv(target: GuestTarget, command: string): string[] {
    return [...guestSshArgs(target), command];
  }

  run(target: GuestTarget, command: string, call: GuestCall): Promise<CommandResult> {
    return this.runner
      .run("ssh", this.argv(target, command), {
        timeoutMs: call.timeoutMs,
        maxOutputBytes: call.maxOutputBytes ?? GUEST_REPLY_MAX_BYTES,
        ...(call.input !== undefined ? { input: call.input } : {}),
        ...(call.signal ? { signal: call.signal } : {}),
      })
      .catch(rethrowGuestOutput(target.vmName, call.what));
  }
}
