/** Error codes shared by daemon and CLI. Numbers live in JSON-RPC's server-defined range. */
export const ErrorCode = {
  Internal: -32603,
  InvalidParams: -32602,
  MethodNotFound: -32601,
  NotFound: -32001,
  AlreadyExists: -32002,
  InvalidState: -32003,
  NotImplemented: -32004,
  Precondition: -32005,
  Busy: -32006,
  Cancelled: -32007,
  /** The VM booted but SSH never answered; it is left running for inspection. */
  SshTimeout: -32008,
  /** The VMM refused to start or exited during boot; the VM is not running (its console says why). */
  BootFailed: -32009,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;
export type ErrorCodeValue = (typeof ErrorCode)[ErrorCodeName];

/** An error whose message a user can act on; crosses the RPC boundary intact. */
export class BangerError extends Error {
  readonly code: ErrorCodeValue;
  readonly hint: string | undefined;
  constructor(code: ErrorCodeValue, message: string, hint?: string) {
    super(message);
    this.name = "BangerError";
    this.code = code;
    this.hint = hint;
  }
}

export function codeName(code: number): string {
  for (const [name, value] of Object.entries(ErrorCode)) if (value === code) return name;
  return String(code);
}
