import type net from "node:net";
import {
  createMessageConnection,
  ResponseError,
  SocketMessageWriter,
  type CancellationToken,
  type MessageConnection,
} from "vscode-jsonrpc/node.js";
import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";
import { CappedMessageReader, FramingError } from "../util/jsonrpc-reader.js";
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

export interface RpcErrorData {
  hint?: string;
}

/** Turns whatever a handler threw into a JSON-RPC error a user can act on. */
export function toResponseError(err: unknown): ResponseError<RpcErrorData> {
  if (err instanceof BangerError) {
    return new ResponseError(err.code, err.message, err.hint ? { hint: err.hint } : {});
  }
  if (err instanceof z.ZodError) {
    return new ResponseError(
      ErrorCode.InvalidParams,
      `invalid parameters: ${z.prettifyError(err)}`,
      {},
    );
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ResponseError(ErrorCode.Internal, `internal error: ${message}`, {
    hint: "this is a bug in banger; the daemon log has details ('banger daemon status' shows where)",
  });
}

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
  const reader = new CappedMessageReader(socket, {
    maxMessageBytes: MAX_REQUEST_BYTES,
    stallTimeoutMs: opts.stallTimeoutMs ?? STALL_TIMEOUT_MS,
    acceptResponses: false,
  });
  const writer = new SocketMessageWriter(socket);
  const conn = createMessageConnection(reader, writer);
  // Bad framing or JSON gets JSON-RPC's own answer (id null unless one was readable); when the
  // framing is lost the connection closes after it.
  reader.onError((err) => {
    if (!(err instanceof FramingError)) return;
    const answer = {
      jsonrpc: "2.0" as const,
      id: err.id,
      error: { code: err.code, message: err.message },
    };
    const written = writer.write(answer).catch(() => {});
    if (err.fatal) {
      void written.then(() => socket.end());
      setTimeout(() => socket.destroy(), 1000).unref();
    }
  });
  const disconnected = new AbortController();
  // One handler for every name: vscode-jsonrpc's per-method handlers spread array params and
  // pass no params object at all when `params` is absent.
  conn.onRequest(async (method: string, raw: unknown, token: CancellationToken) => {
    if (!Object.hasOwn(methods, method)) {
      throw new ResponseError(ErrorCode.MethodNotFound, `unknown method ${quoteName(method)}`, {
        hint: "docs/internals/rpc.md lists the methods this daemon serves",
      });
    }
    const name = method as MethodName;
    const abort = new AbortController();
    const onDisconnect = () => abort.abort(new Error("client disconnected"));
    disconnected.signal.addEventListener("abort", onDisconnect, { once: true });
    const sub = token.onCancellationRequested(() => abort.abort(new Error("cancelled")));
    try {
      const { params, progressToken } = splitProgressToken(raw);
      const parsed = methods[name].params.parse(params) as ParsedParamsOf<typeof name>;
      const ctx: RequestContext = {
        signal: abort.signal,
        progress(report) {
          if (progressToken === undefined || disconnected.signal.aborted) return;
          void conn
            .sendNotification(PROGRESS_NOTIFICATION, { token: progressToken, ...report })
            .catch(() => {});
        },
      };
      const handler = handlers[name] as Handler<typeof name>;
      const result = await handler(parsed, ctx);
      return methods[name].result.parse(result);
    } catch (err) {
      const response = toResponseError(err);
      if (response.code === ErrorCode.Internal) log.error({ err, method: name }, "request failed");
      throw response;
    } finally {
      sub.dispose();
      disconnected.signal.removeEventListener("abort", onDisconnect);
    }
  });
  socket.on("close", () => {
    disconnected.abort();
    conn.dispose();
  });
  // A client that vanishes mid-write must not crash the daemon.
  socket.on("error", () => {});
  conn.listen();
  return conn;
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
