import type net from "node:net";
import { ResponseError, type MessageConnection } from "vscode-jsonrpc/node.js";
import { BangerError, ErrorCode } from "../api/errors.js";
import { serveJsonRpc, toResponseError, type ErrorWording } from "../util/jsonrpc-server.js";
import {
  methods,
  PROGRESS_NOTIFICATION,
  PROGRESS_TOKEN_KEY,
  type MethodName,
  type ParsedParamsOf,
  type ProgressReport,
  type ResultOf,
} from "../api/methods.js";

export interface RequestContext {
  /** Report a stage of a long operation; a no-op unless the caller asked for progress. */
  progress(report: Omit<ProgressReport, "token">): void;
  /** Aborted when the caller cancels or disconnects. */
  signal: AbortSignal;
}

export type Handler<M extends MethodName> = (
  params: ParsedParamsOf<M>,
  ctx: RequestContext,
) => Promise<ResultOf<M>>;

export type Handlers = { [M in MethodName]: Handler<M> };

/** How the daemon words the errors it answers with. */
const DAEMON_WORDING: ErrorWording = {
  invalidParams: "invalid parameters: ",
  internal: "internal error: ",
  internalHint:
    "this is a bug in banger; the daemon log has details ('banger daemon status' shows where)",
};

/**
 * The largest request the daemon reads. Requests carry names, paths and options (the biggest,
 * vm.session.send's text, is typed input): 16 MiB is far above any real one, and still small
 * enough that a few hundred connections at the cap cannot exhaust the daemon's memory.
 */
export const MAX_REQUEST_BYTES = 16 * 1024 * 1024;
/** A request started but not finished is given up on after this long without data. */
export const STALL_TIMEOUT_MS = 30_000;

export interface RpcLogger {
  error(obj: object, msg: string): void;
}

/** Serves every method of the table on one client socket. */
export function serveConnection(
  socket: net.Socket,
  handlers: Handlers,
  log: RpcLogger,
  opts: { stallTimeoutMs?: number } = {},
): MessageConnection {
  return serveJsonRpc(
    socket,
    {
      serves: (method) => Object.hasOwn(methods, method),
      unknownMethod: (method) =>
        new ResponseError(ErrorCode.MethodNotFound, `unknown method ${quoteName(method)}`, {
          hint: "docs/internals/rpc.md lists the methods this daemon serves",
        }),
      async run(method, raw, call) {
        const name = method as MethodName;
        const { params, progressToken } = splitProgressToken(raw);
        const parsed = methods[name].params.parse(params) as ParsedParamsOf<typeof name>;
        const ctx: RequestContext = {
          signal: call.signal,
          progress(report) {
            if (progressToken === undefined) return;
            call.notify(PROGRESS_NOTIFICATION, { token: progressToken, ...report });
          },
        };
        const handler = handlers[name] as Handler<typeof name>;
        const result = await handler(parsed, ctx);
        return methods[name].result.parse(result);
      },
      toError: (err) => toResponseError(err, DAEMON_WORDING),
      failed(method, _params, err, answer) {
        if (answer.code === ErrorCode.Internal) log.error({ err, method }, "request failed");
      },
    },
    {
      maxMessageBytes: MAX_REQUEST_BYTES,
      stallTimeoutMs: opts.stallTimeoutMs ?? STALL_TIMEOUT_MS,
    },
  );
}

/** A method name from the wire, quoted and cut short, for an error message. */
function quoteName(name: string): string {
  return JSON.stringify(name.length > 100 ? `${name.slice(0, 100)}...` : name);
}

function splitProgressToken(raw: unknown): { params: unknown; progressToken: string | undefined } {
  // No params at all means none: every method whose schema takes {} then works without them.
  if (raw === undefined) return { params: {}, progressToken: undefined };
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid parameters: params must be an object of named parameters, got ${
        raw === null ? "null" : Array.isArray(raw) ? "an array" : typeof raw
      }`,
    );
  }
  const { [PROGRESS_TOKEN_KEY]: token, ...params } = raw as Record<string, unknown>;
  return { params, progressToken: typeof token === "string" ? token : undefined };
}
