import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import {
  createMessageConnection,
  ErrorCodes,
  ResponseError,
  SocketMessageWriter,
  type MessageConnection,
} from "vscode-jsonrpc/node.js";
import { BangerError, ErrorCode, type ErrorCodeValue } from "../api/errors.js";
import type { MethodName, ParamsOf, ProgressReport, ResultOf } from "../api/methods.js";
import { PROGRESS_NOTIFICATION, PROGRESS_TOKEN_KEY } from "../api/progress.js";
import type { Layout } from "../paths/layout.js";
import { packagePath } from "../paths/package-root.js";
import { CappedMessageReader, FramingError } from "../util/jsonrpc-reader.js";

export interface CallOptions {
  onProgress?: (report: ProgressReport) => void;
}

/** A typed JSON-RPC connection to bangerd. */
export class DaemonClient {
  private readonly progressHandlers = new Map<string, (report: ProgressReport) => void>();

  constructor(
    private readonly conn: MessageConnection,
    private readonly socket: net.Socket,
    /** Set when the daemon answered "not for any request" (it refused us, or could not read us). */
    private readonly refusal: { error: BangerError | null } = { error: null },
  ) {
    conn.onNotification(PROGRESS_NOTIFICATION, (report: ProgressReport) => {
      this.progressHandlers.get(report.token)?.(report);
    });
    // The daemon going away must fail pending calls, not leave them hanging forever.
    conn.onClose(() => conn.dispose());
    conn.listen();
  }

  async call<M extends MethodName>(
    method: M,
    params: ParamsOf<M>,
    opts: CallOptions = {},
  ): Promise<ResultOf<M>> {
    let sent: object = params as object;
    let token: string | undefined;
    if (opts.onProgress) {
      token = randomUUID();
      this.progressHandlers.set(token, opts.onProgress);
      sent = { ...sent, [PROGRESS_TOKEN_KEY]: token };
    }
    try {
      return (await this.conn.sendRequest(method, sent)) as ResultOf<M>;
    } catch (err) {
      throw this.refusal.error ?? fromRpcError(err);
    } finally {
      if (token) this.progressHandlers.delete(token);
    }
  }

  close(): void {
    this.conn.dispose();
    this.socket.destroy();
  }
}

/** Rebuild a BangerError from the wire so the CLI prints the daemon's message and hint. */
export function fromRpcError(err: unknown): unknown {
  if (
    err instanceof ResponseError &&
    err.code !== ErrorCodes.PendingResponseRejected &&
    err.code !== ErrorCodes.ConnectionInactive
  ) {
    const data = err.data as { hint?: string } | undefined;
    return new BangerError(err.code as ErrorCodeValue, err.message, data?.hint);
  }
  if (
    err instanceof Error &&
    /connection (got disposed|is closed)|stream was destroyed/i.test(err.message)
  ) {
    return new BangerError(
      ErrorCode.Internal,
      "lost the connection to bangerd",
      "the daemon may have crashed; see 'banger daemon status' and its log, then retry",
    );
  }
  return err;
}

export function connectSocket(file: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(file);
    socket.once("connect", () => {
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", reject);
  });
}

/**
 * The largest answer the CLI reads from the daemon: far above any real one (a workspace patch
 * is the biggest), and below what a JavaScript string can hold.
 */
export const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;

export function wrapSocket(socket: net.Socket): DaemonClient {
  const refusal: { error: BangerError | null } = { error: null };
  const reader = new CappedMessageReader(socket, {
    maxMessageBytes: MAX_RESPONSE_BYTES,
    // A slow answer is only slow once it has started arriving; a big one streams.
    stallTimeoutMs: 120_000,
    onOrphanError: (e) => {
      refusal.error = new BangerError(
        e.code as ErrorCodeValue,
        `bangerd: ${e.message}`,
        e.code === ErrorCode.Busy ? undefined : "this CLI and the daemon may be different versions",
      );
    },
  });
  // An answer that cannot be read leaves nothing to wait for on this connection.
  reader.onError((err) => {
    if (err instanceof FramingError && err.fatal) socket.destroy();
  });
  const conn = createMessageConnection(reader, new SocketMessageWriter(socket));
  socket.on("error", () => {});
  return new DaemonClient(conn, socket, refusal);
}

function isNotRunning(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ECONNREFUSED";
}

export interface ConnectDeps {
  layout: Layout;
  env: NodeJS.ProcessEnv;
  /** Told when the daemon is started on demand. */
  notice: (line: string) => void;
  /** Path of the bangerd launcher. */
  daemonBin?: string;
  /** How long to wait for a freshly started daemon's socket. */
  startTimeoutMs?: number;
}

/** Connect if a daemon is running; null when none is. */
export async function tryConnect(layout: Layout): Promise<DaemonClient | null> {
  try {
    return wrapSocket(await connectSocket(layout.socketFile));
  } catch (err) {
    if (isNotRunning(err)) return null;
    throw err;
  }
}

/** Connect, starting bangerd in the background first when it is not running. */
export async function connectOrStart(deps: ConnectDeps): Promise<DaemonClient> {
  const existing = await tryConnect(deps.layout);
  if (existing) return existing;
  const pid = await startDaemon(deps);
  deps.notice(
    `banger: started bangerd in the background (pid ${pid}); log: ${deps.layout.daemonLogFile}`,
  );
  const client = await tryConnect(deps.layout);
  if (!client)
    throw new BangerError(ErrorCode.Internal, "bangerd started but its socket does not answer");
  return client;
}

export function defaultDaemonBin(): string {
  return packagePath("bin", "bangerd");
}

/** Spawn bangerd detached (it must outlive this CLI) and wait, bounded, until its socket answers. */
export async function startDaemon(deps: ConnectDeps): Promise<number> {
  const { layout } = deps;
  // Loaded here, not at the top: most commands find the daemon running.
  const { withoutAgent } = await import("../guest/ssh.js");
  await fsp.mkdir(layout.stateDir, { recursive: true, mode: 0o700 });
  const logFd = fs.openSync(layout.daemonLogFile, "a", 0o600);
  const logStart = fs.fstatSync(logFd).size;
  const child = spawn(process.execPath, [deps.daemonBin ?? defaultDaemonBin()], {
    detached: true,
    stdio: ["ignore", logFd, logFd],
    // The daemon runs ssh toward untrusted guests: it never gets the user's agent.
    env: withoutAgent(deps.env),
  });
  fs.closeSync(logFd);
  let exited: number | null = null;
  child.once("exit", (code) => {
    exited = code ?? 1;
  });
  const pid = child.pid;
  child.unref();
  if (pid === undefined) throw new BangerError(ErrorCode.Internal, "could not start bangerd");

  const deadline = Date.now() + (deps.startTimeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    try {
      const socket = await connectSocket(layout.socketFile);
      socket.destroy();
      return pid;
    } catch (err) {
      if (!isNotRunning(err)) throw err;
    }
    if (exited !== null) {
      const tail = await readFrom(layout.daemonLogFile, logStart);
      // Lost a start race to another CLI: that daemon is as good as ours.
      if (/already running/.test(tail)) return pid;
      throw new BangerError(
        ErrorCode.Internal,
        `bangerd exited during start-up (status ${exited})${tail ? `:\n${tail.trim()}` : ""}`,
        `see ${layout.daemonLogFile}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new BangerError(
    ErrorCode.Internal,
    "bangerd did not open its socket in time",
    `see ${layout.daemonLogFile}, or run 'bangerd' in a terminal to watch it start`,
  );
}

async function readFrom(file: string, offset: number): Promise<string> {
  try {
    const buf = await fsp.readFile(file);
    return buf.subarray(offset).toString("utf8").split("\n").slice(-10).join("\n");
  } catch {
    return "";
  }
}
