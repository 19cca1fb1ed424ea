// The one JSON-RPC server banger has, on vscode-jsonrpc: bangerd (daemon/rpc-server.ts) and
// banger-helper (net/helper-server.ts) each give it their method table and wording. It reads
// through CappedMessageReader (bounded framing, stall timeout, no deep-JSON crash), answers bad
// framing with JSON-RPC's own errors, refuses unknown methods, and aborts a request's signal
// when its caller cancels or disconnects.
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
import { CappedMessageReader, FramingError } from "./jsonrpc-reader.js";

export interface RpcErrorData {
  hint?: string;
}

/** How a server words the errors it answers with. */
export interface ErrorWording {
  /** Before zod's account of params that do not fit, e.g. "invalid parameters: ". */
  invalidParams: string;
  /** Before an unexpected error's message, e.g. "internal error: ". */
  internal: string;
  /** The hint of an unexpected error: where its details are. */
  internalHint: string;
}

/** Turns whatever a handler threw into a JSON-RPC error a user can act on. */
export function toResponseError(err: unknown, wording: ErrorWording): ResponseError<RpcErrorData> {
  if (err instanceof BangerError) {
    return new ResponseError(err.code, err.message, err.hint ? { hint: err.hint } : {});
  }
  if (err instanceof z.ZodError) {
    return new ResponseError(
      ErrorCode.InvalidParams,
      `${wording.invalidParams}${z.prettifyError(err)}`,
      {},
    );
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ResponseError(ErrorCode.Internal, `${wording.internal}${message}`, {
    hint: wording.internalHint,
  });
}

export interface CallContext {
  /** Aborted when the caller cancels or disconnects. */
  signal: AbortSignal;
  /** A notification to the caller; dropped once it has gone. */
  notify(method: string, params: object): void;
}

/** What one server serves. */
export interface RpcTable {
  /** Whether `method` is served: an own name of the table, never `__proto__` or `constructor`. */
  serves(method: string): boolean;
  /** The answer to a method that is not served. */
  unknownMethod(method: string): ResponseError<RpcErrorData>;
  /** Runs one served request; `params` are as sent (undefined when absent). */
  run(method: string, params: unknown, call: CallContext): Promise<unknown>;
  /** What a thrown error is answered with. */
  toError(err: unknown): ResponseError<RpcErrorData>;
  /** Told of every request that failed, with the answer it got. */
  failed?(method: string, params: unknown, err: unknown, answer: ResponseError<RpcErrorData>): void;
}

export interface FramingBounds {
  /** Largest request read, by its declared Content-Length. */
  maxMessageBytes: number;
  /** A request started but not finished is given up on after this long without data. */
  stallTimeoutMs: number;
}

/** Serves `table` on one client socket until it closes. */
export function serveJsonRpc(
  socket: net.Socket,
  table: RpcTable,
  bounds: FramingBounds,
): MessageConnection {
  const reader = new CappedMessageReader(socket, {
    maxMessageBytes: bounds.maxMessageBytes,
    stallTimeoutMs: bounds.stallTimeoutMs,
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
  conn.onRequest(async (method: string, params: unknown, token: CancellationToken) => {
    if (!table.serves(method)) throw table.unknownMethod(method);
    const abort = new AbortController();
    const onDisconnect = () => abort.abort(new Error("client disconnected"));
    disconnected.signal.addEventListener("abort", onDisconnect, { once: true });
    const sub = token.onCancellationRequested(() => abort.abort(new Error("cancelled")));
    try {
      return await table.run(method, params, {
        signal: abort.signal,
        notify(name, body) {
          if (disconnected.signal.aborted) return;
          void conn.sendNotification(name, body).catch(() => {});
        },
      });
    } catch (err) {
      const answer = table.toError(err);
      table.failed?.(method, params, err, answer);
      throw answer;
    } finally {
      sub.dispose();
      disconnected.signal.removeEventListener("abort", onDisconnect);
    }
  });
  socket.on("close", () => {
    disconnected.abort();
    conn.dispose();
  });
  // A client that vanishes mid-write must not crash the server.
  socket.on("error", () => {});
  conn.listen();
  return conn;
}

/**
 * A connection over a server's limit: says why (`message`, as a Busy error), then closes. The answer waits for the client's first bytes
 * (clients speak first): closing before the client's write makes that write fail (EPIPE) and the
 * client drops the answer unread. It answers the request's id when the first chunk holds it.
 */
export function refuseConnection(socket: net.Socket, message: string): void {
  socket.on("error", () => {});
  const timer = setTimeout(() => socket.destroy(), 2000);
  timer.unref();
  socket.once("data", (chunk: Buffer) => {
    socket.resume(); // drop the rest
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: firstRequestId(chunk),
      error: {
        code: ErrorCode.Busy,
        message,
      },
    });
    socket.end(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
}

/** The id of a whole request at the start of `chunk`, else null. */
function firstRequestId(chunk: Buffer): string | number | null {
  const end = chunk.indexOf("\r\n\r\n");
  if (end < 0 || end > 8192) return null;
  try {
    const id = (JSON.parse(chunk.subarray(end + 4).toString("utf8")) as { id?: unknown }).id;
    return typeof id === "string" || typeof id === "number" ? id : null;
  } catch {
    return null;
  }
}
