import type net from "node:net";
import {
  createMessageConnection,
  ResponseError,
  SocketMessageReader,
  SocketMessageWriter,
  type MessageConnection,
} from "vscode-jsonrpc/node.js";
import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";
import {
  methodNames,
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

export interface RpcLogger {
  error(obj: object, msg: string): void;
}

/** Serves every method of the table on one client socket. */
export function serveConnection(
  socket: net.Socket,
  handlers: Handlers,
  log: RpcLogger,
): MessageConnection {
  const conn = createMessageConnection(
    new SocketMessageReader(socket),
    new SocketMessageWriter(socket),
  );
  const disconnected = new AbortController();
  for (const name of methodNames) {
    conn.onRequest(name, async (raw: unknown, token) => {
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
        if (response.code === ErrorCode.Internal)
          log.error({ err, method: name }, "request failed");
        throw response;
      } finally {
        sub.dispose();
        disconnected.signal.removeEventListener("abort", onDisconnect);
      }
    });
  }
  socket.on("close", () => {
    disconnected.abort();
    conn.dispose();
  });
  // A client that vanishes mid-write must not crash the daemon.
  socket.on("error", () => {});
  conn.listen();
  return conn;
}

function splitProgressToken(raw: unknown): { params: unknown; progressToken: string | undefined } {
  if (raw === null || raw === undefined) return { params: {}, progressToken: undefined };
  if (typeof raw !== "object" || Array.isArray(raw))
    return { params: raw, progressToken: undefined };
  const { [PROGRESS_TOKEN_KEY]: token, ...params } = raw as Record<string, unknown>;
  return { params, progressToken: typeof token === "string" ? token : undefined };
}
