import { BangerError, ErrorCode } from "../api/errors.js";
import { OutputTooLargeError } from "../system/runner.js";
import { formatSizeBytes } from "../util/size.js";

/**
 * What the daemon keeps of a guest's answer. Everything a guest prints is hostile input: each
 * call buffers at most a fixed number of bytes (per stream) and kills its ssh past them, so
 * the daemon's memory never grows with what a guest prints. What has to be large (a
 * workspace patch, `session logs -f`) streams from the guest to the CLI instead.
 */

/** A plain guest call: session list/show/start/stop, `ss` for ports, a health probe. */
export const GUEST_REPLY_MAX_BYTES = 4 * 1024 * 1024;

/** The guest's answer came past its cap: a clear error naming the VM and the call. */
export class GuestOutputTooLargeError extends BangerError {
  constructor(vm: string, what: string, limit: number, stream: "stdout" | "stderr") {
    super(
      ErrorCode.Internal,
      `VM ${vm} printed more than ${formatSizeBytes(limit)} on ${stream} for ${what}: guest output too large, banger stopped reading it`,
      `something in the guest prints far more than banger expects (a login script, a replaced tool?); 'banger vm ssh ${vm}' to look`,
    );
    this.name = "GuestOutputTooLargeError";
  }
}

/** For `.catch`: the runner's OutputTooLargeError becomes a GuestOutputTooLargeError. */
export function rethrowGuestOutput(vm: string, what: string): (err: unknown) => never {
  return (err: unknown) => {
    if (err instanceof OutputTooLargeError)
      throw new GuestOutputTooLargeError(vm, what, err.limit, err.stream);
    throw err;
  };
}
