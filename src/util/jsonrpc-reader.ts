import type net from "node:net";
import {
  AbstractMessageReader,
  Disposable,
  type DataCallback,
  type Message,
  type MessageReader,
} from "vscode-jsonrpc/node.js";

/** JSON-RPC 2.0's own codes for what is wrong with a message before any method runs. */
export const PARSE_ERROR = -32700;
export const INVALID_REQUEST = -32600;

/**
 * What a message a peer sent was wrong with. `fatal`: the framing is lost (a bad header, a
 * message over the cap, a stalled message), so the connection must close after the answer;
 * otherwise the next message can still be read.
 */
export class FramingError extends Error {
  constructor(
    readonly code: typeof PARSE_ERROR | typeof INVALID_REQUEST,
    message: string,
    readonly fatal: boolean,
    /** The request's id when it could be read, so the answer can name it. */
    readonly id: string | number | null = null,
  ) {
    super(message);
    this.name = "FramingError";
  }
}

export interface CappedReaderOptions {
  /** Largest message body accepted, by its declared Content-Length. */
  maxMessageBytes: number;
  /** Largest header block (the lines before the blank line). */
  maxHeaderBytes?: number;
  /** A message started but not finished closes the connection after this long without data. */
  stallTimeoutMs?: number;
  /** Stop reading while this many bytes of answers wait to be written (the peer is not reading). */
  maxPendingWriteBytes?: number;
  /**
   * Deliver responses (the CLI reads the daemon's). The daemon sends no requests, so a response
   * sent to it answers nothing: it is dropped, never handed on (vscode-jsonrpc would log it).
   */
  acceptResponses?: boolean;
  /**
   * An error answer with id null (the peer could not read what we sent, or refused the
   * connection): it answers no pending request, so it is handed here instead of dropped.
   */
  onOrphanError?: (error: { code: number; message: string }) => void;
}

const HEADER_END = Buffer.from("\r\n\r\n");

/**
 * A MessageReader for `Content-Length` framed JSON-RPC over a socket that, unlike
 * vscode-jsonrpc's SocketMessageReader, refuses a message by its header before buffering it,
 * caps the header, times out a stalled message, and reports bad input as a FramingError (with
 * JSON-RPC's code) instead of only an error event, so the owner can answer before closing.
 */
export class CappedMessageReader extends AbstractMessageReader implements MessageReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Body length of the message being read; -1 while reading a header. */
  private expected = -1;
  private stallTimer: NodeJS.Timeout | undefined;
  private callback: DataCallback | null = null;
  private stopped = false;
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });

  constructor(
    private readonly socket: net.Socket,
    private readonly opts: CappedReaderOptions,
  ) {
    super();
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    const onData = (data: Buffer) => this.onData(data);
    const onError = (err: Error) => this.fireError(err);
    const onClose = () => {
      this.clearStall();
      this.fireClose();
    };
    this.socket.on("data", onData);
    this.socket.on("error", onError);
    this.socket.on("close", onClose);
    return Disposable.create(() => {
      this.clearStall();
      this.socket.off("data", onData);
      this.socket.off("error", onError);
      this.socket.off("close", onClose);
    });
  }

  override dispose(): void {
    this.clearStall();
    super.dispose();
  }

  private fail(err: FramingError): void {
    if (err.fatal) {
      // Nothing after a lost frame can be trusted: drop it and read no more.
      this.stopped = true;
      this.chunks = [];
      this.buffered = 0;
      this.clearStall();
      this.socket.pause();
    }
    this.fireError(err);
  }

  private onData(data: Buffer): void {
    if (this.stopped) return;
    this.chunks.push(data);
    this.buffered += data.length;
    while (!this.stopped) {
      if (this.expected === -1 && !this.readHeader()) break;
      if (this.expected === -1 || this.buffered < this.expected) break;
      const body = this.take(this.expected);
      this.expected = -1;
      this.deliver(body);
    }
    if (this.stopped) return;
    if (this.buffered > 0 || this.expected !== -1) this.armStall();
    else this.clearStall();
    // Backpressure: a peer that sends requests but never reads the answers stops being read.
    const maxPending = this.opts.maxPendingWriteBytes ?? 8 * 1024 * 1024;
    if (this.socket.writableLength > maxPending) {
      this.socket.pause();
      this.socket.once("drain", () => this.socket.resume());
    }
  }

  /** Parses a header block when a whole one is buffered; false when more bytes are needed. */
  private readHeader(): boolean {
    const maxHeader = this.opts.maxHeaderBytes ?? 8192;
    const head = Buffer.concat(this.chunks);
    this.chunks = [head];
    const end = head.indexOf(HEADER_END);
    if (end === -1) {
      if (head.length > maxHeader)
        this.fail(new FramingError(INVALID_REQUEST, `header longer than ${maxHeader} bytes`, true));
      return false;
    }
    if (end > maxHeader) {
      this.fail(new FramingError(INVALID_REQUEST, `header longer than ${maxHeader} bytes`, true));
      return false;
    }
    const lines = head.toString("latin1", 0, end).split("\r\n");
    this.take(end + HEADER_END.length);
    let length: number | null = null;
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon <= 0) {
        this.fail(new FramingError(INVALID_REQUEST, "malformed header line", true));
        return false;
      }
      if (line.slice(0, colon).trim().toLowerCase() !== "content-length") continue;
      const value = line.slice(colon + 1).trim();
      if (!/^\d{1,16}$/.test(value)) {
        this.fail(new FramingError(INVALID_REQUEST, "Content-Length is not a number", true));
        return false;
      }
      length = Number(value);
    }
    if (length === null) {
      this.fail(new FramingError(INVALID_REQUEST, "header has no Content-Length", true));
      return false;
    }
    if (length > this.opts.maxMessageBytes) {
      this.fail(
        new FramingError(
          INVALID_REQUEST,
          `message of ${length} bytes is over the limit of ${this.opts.maxMessageBytes} bytes`,
          true,
        ),
      );
      return false;
    }
    this.expected = length;
    return true;
  }

  /** Removes and returns the first `n` buffered bytes. */
  private take(n: number): Buffer {
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    return out;
  }

  private deliver(body: Buffer): void {
    let text: string;
    try {
      text = this.decoder.decode(body);
    } catch {
      this.fail(
        new FramingError(PARSE_ERROR, "Parse error: the message is not valid UTF-8", false),
      );
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      this.fail(new FramingError(PARSE_ERROR, `Parse error: ${(err as Error).message}`, false));
      return;
    }
    const problem = envelopeProblem(value);
    if (problem !== null) {
      this.fail(
        new FramingError(INVALID_REQUEST, `Invalid Request: ${problem}`, false, idOf(value)),
      );
      return;
    }
    const m = value as {
      id?: unknown;
      method?: unknown;
      error?: { code?: unknown; message?: unknown };
    };
    if (m.method === undefined && !(this.opts.acceptResponses ?? true)) return;
    if (this.opts.onOrphanError && m.id === null && typeof m.error === "object" && m.error) {
      this.opts.onOrphanError({
        code: typeof m.error.code === "number" ? m.error.code : INVALID_REQUEST,
        message: typeof m.error.message === "string" ? m.error.message : "unknown error",
      });
      return;
    }
    this.callback?.(value as Message);
  }

  private armStall(): void {
    this.clearStall();
    const ms = this.opts.stallTimeoutMs ?? 30_000;
    this.stallTimer = setTimeout(() => {
      this.fail(
        new FramingError(
          INVALID_REQUEST,
          `incomplete message: no data for ${Math.round(ms / 1000)} s`,
          true,
        ),
      );
    }, ms);
    this.stallTimer.unref();
  }

  private clearStall(): void {
    if (this.stallTimer) clearTimeout(this.stallTimer);
    this.stallTimer = undefined;
  }
}

function idOf(value: unknown): string | number | null {
  if (typeof value !== "object" || value === null) return null;
  const id = (value as { id?: unknown }).id;
  return typeof id === "string" || typeof id === "number" ? id : null;
}

/**
 * What makes a parsed value not a JSON-RPC 2.0 message; null when it is one. Whatever passes is
 * exactly a request, a notification or a response to vscode-jsonrpc: anything else it would
 * JSON.stringify into a log line, and a 200k-deep value overflows the stack there (a crash).
 */
function envelopeProblem(value: unknown): string | null {
  if (Array.isArray(value)) return "batches are not supported; send one request per message";
  if (typeof value !== "object" || value === null) return "a message must be a JSON object";
  const m = value as Record<string, unknown>;
  if (m.jsonrpc !== "2.0") return 'jsonrpc must be "2.0"';
  const { id } = m;
  const idOk = typeof id === "string" || typeof id === "number";
  // params are the method's business: a wrong type is Invalid params (-32602), answered there.
  if ("method" in m) {
    if (typeof m.method !== "string") return "method must be a string";
    if (id !== undefined && !idOk) return "a request's id must be a string or a number";
    return null;
  }
  if (id !== null && !idOk) return "id must be a string, a number or null";
  if (m.result === undefined && (typeof m.error !== "object" || m.error === null))
    return "a message needs a method, a result or an error";
  // A response: only the CLI takes them (and one with id null goes to onOrphanError).
  return null;
}
