import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { ResponseError, type MessageConnection } from "vscode-jsonrpc/node.js";
import { BangerError, ErrorCode } from "../api/errors.js";
import {
  refuseConnection,
  serveJsonRpc,
  toResponseError,
  type ErrorWording,
} from "../util/jsonrpc-server.js";
import {
  helperMethodNames,
  helperMethods,
  MAX_HELPER_MESSAGE_BYTES,
  type HelperMethod,
  type HelperParams,
  type HelperResult,
} from "./helper-protocol.js";
import { HelperClient } from "./helper-client.js";
import { cidrsOverlap, type NetworkPin } from "./pin.js";
import type { PrivilegedOps } from "./privileged.js";

export interface HelperLogger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface HelperServerOptions {
  socketPath: string;
  /** What runs the operations: the root implementation in banger-helper, a fake in tests. */
  ops: PrivilegedOps;
  /** The one user served: the socket is theirs (mode 0600) and taps are only created for them. */
  uid: number;
  /** The bridge and subnet served (told to the daemon by ping; `ops` enforces them). */
  pin: NetworkPin;
  gid: number;
  log: HelperLogger;
  /** Test seam: how long a half-sent request may stall (default HELPER_STALL_TIMEOUT_MS). */
  stallTimeoutMs?: number;
}

/**
 * Connections served at once; one more is refused with a Busy answer. The daemon holds one per
 * call, briefly: 64 is far above that, and keeps what a flood can make a root process buffer
 * (each connection up to MAX_HELPER_MESSAGE_BYTES) bounded.
 */
export const MAX_HELPER_CONNECTIONS = 64;

/** A request started but not finished is given up on after this long without data. */
export const HELPER_STALL_TIMEOUT_MS = 30_000;

/** How the helper words the errors it answers with. */
const HELPER_WORDING: ErrorWording = {
  invalidParams: "banger-helper refused: ",
  internal: "banger-helper: ",
  internalHint: "the helper's log (its stderr) has details",
};

type Dispatch = {
  [M in HelperMethod]: (p: HelperParams<M>) => Promise<HelperResult<M>>;
};

/**
 * banger-helper's socket: one JSON-RPC method per privileged operation, params
 * validated by the protocol's schemas, everything else refused.
 */
export class HelperServer {
  private closing: Promise<void> | null = null;
  private readonly sockets = new Set<net.Socket>();
  private readonly connections = new Set<MessageConnection>();

  private constructor(
    private readonly opts: HelperServerOptions,
    private readonly server: net.Server,
  ) {}

  get socketPath(): string {
    return this.opts.socketPath;
  }

  static async start(opts: HelperServerOptions): Promise<HelperServer> {
    const dir = path.dirname(opts.socketPath);
    // Explicit chmod: the helper runs with umask 077, and the served user must traverse the dir.
    if (await fs.mkdir(dir, { recursive: true, mode: 0o755 })) await fs.chmod(dir, 0o755);
    await checkPrivateDir(dir);
    await checkSiblings(dir, opts.socketPath, opts.pin);
    await removeStaleSocket(opts.socketPath);
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", (err: NodeJS.ErrnoException) =>
        reject(
          new BangerError(
            ErrorCode.Precondition,
            `cannot listen on ${opts.socketPath}: ${err.message}`,
          ),
        ),
      );
      // The socket is born 0600 (bind applies the umask synchronously): no chmod, which would
      // follow a symlink, is ever needed.
      const umask = process.umask(0o177);
      try {
        server.listen(opts.socketPath, () => resolve());
      } finally {
        process.umask(umask);
      }
    });
    try {
      // Still the socket we bound (the dir is root's alone, so this is belt and braces), then
      // handed to the one user it serves without following links.
      const st = await fs.lstat(opts.socketPath);
      if (!st.isSocket() || st.uid !== (process.geteuid?.() ?? 0) || (st.mode & 0o777) !== 0o600)
        throw new BangerError(
          ErrorCode.Precondition,
          `${opts.socketPath} changed under banger-helper while it started; refusing to serve it`,
        );
      await fs.lchown(opts.socketPath, opts.uid, opts.gid);
    } catch (err) {
      server.close();
      throw err;
    }
    const helper = new HelperServer(opts, server);
    server.on("connection", (socket) => helper.accept(socket));
    opts.log.info(
      { socket: opts.socketPath, uid: opts.uid, bridge: opts.pin.bridge, subnet: opts.pin.subnet },
      "banger-helper listening",
    );
    return helper;
  }

  private dispatch(): Dispatch {
    const { ops, uid, pin } = this.opts;
    const none = async (op: Promise<void>) => {
      await op;
      return null;
    };
    return {
      ping: async () => ({
        pong: true as const,
        uid,
        pid: process.pid,
        bridge: pin.bridge,
        subnet: pin.subnet,
      }),
      ensureBridge: (p) => none(ops.ensureBridge(p.name, p.gatewayCidr)),
      removeBridge: (p) => none(ops.removeBridge?.(p.name) ?? Promise.resolve()),
      createTap: async (p) => {
        if (p.ownerUid !== uid) {
          throw new BangerError(
            ErrorCode.InvalidParams,
            `refusing to create tap "${p.name}" for uid ${p.ownerUid}: this helper serves uid ${uid}`,
          );
        }
        await ops.createTap(p.name, p.bridge, p.ownerUid);
        return null;
      },
      deleteTap: (p) => none(ops.deleteTap(p.name)),
      listTaps: async (p) => ops.listTaps(p.bridge),
      // Only this user's: another user's taps are not theirs to learn about.
      listDetachedTaps: async () =>
        ((await ops.listDetachedTaps?.()) ?? []).filter((t) => t.ownerUid === uid),
      ensureNat: (p) => none(ops.ensureNat(p.subnet, p.bridge)),
      removeNat: (p) => none(ops.removeNat(p.bridge)),
      routeResolver: (p) => none(ops.routeResolver(p.bridge, p.dnsServer)),
      unrouteResolver: (p) => none(ops.unrouteResolver(p.bridge)),
    };
  }

  private accept(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.sockets.size >= MAX_HELPER_CONNECTIONS) {
      this.opts.log.error({ open: this.sockets.size }, "connection refused: too many");
      refuseConnection(
        socket,
        `too many connections to banger-helper (${this.sockets.size} open, the limit); try again shortly`,
      );
      return;
    }
    const dispatch = this.dispatch();
    const { log } = this.opts;
    const conn = serveJsonRpc(
      socket,
      {
        serves: (method) => Object.hasOwn(helperMethods, method),
        unknownMethod(method) {
          log.error({ method }, "unknown method refused");
          return new ResponseError(
            ErrorCode.MethodNotFound,
            `banger-helper does not do "${method}"; it serves only: ${helperMethodNames.join(", ")}`,
          );
        },
        async run(name, raw) {
          const method = name as HelperMethod;
          // No params at all means none: ping's schema takes {}.
          const params = helperMethods[method].params.parse(raw === undefined ? {} : raw);
          if (method !== "ping") log.info({ method, params }, "operation");
          const run = dispatch[method] as (p: unknown) => Promise<unknown>;
          return await run(params);
        },
        toError: (err) => toResponseError(err, HELPER_WORDING),
        failed(method, params, _err, answer) {
          log.error({ method, params, error: answer.message }, "refused or failed");
        },
      },
      {
        maxMessageBytes: MAX_HELPER_MESSAGE_BYTES,
        stallTimeoutMs: this.opts.stallTimeoutMs ?? HELPER_STALL_TIMEOUT_MS,
      },
    );
    this.sockets.add(socket);
    this.connections.add(conn);
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.connections.delete(conn);
    });
  }

  /** Stops listening, drops clients and removes the socket. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const socket of this.sockets) socket.destroy();
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      await fs.rm(this.opts.socketPath, { force: true });
      this.opts.log.info({ socket: this.opts.socketPath }, "banger-helper stopped");
    })();
    return this.closing;
  }
}

/** The socket's directory must be ours alone: otherwise someone else could swap the socket. */
async function checkPrivateDir(dir: string): Promise<void> {
  const st = await fs.lstat(dir);
  const me = process.geteuid?.() ?? 0;
  if (!st.isDirectory() || st.uid !== me || (st.mode & 0o022) !== 0) {
    throw new BangerError(
      ErrorCode.Precondition,
      `${dir} must be a directory (not a symlink) owned by uid ${me} and writable by no one else (it is ${st.isSymbolicLink() ? "a symlink" : st.isDirectory() ? "a directory" : "not a directory"}, uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`,
      "pick a --socket in a directory only root can write, e.g. /run/banger-helper/",
    );
  }
}

/**
 * Only a socket file nobody answers on (a crashed helper's) is removed. A live helper, or
 * anything that is not a socket (a file, a symlink, a directory), is refused and kept.
 */
async function removeStaleSocket(file: string): Promise<void> {
  const st = await fs.lstat(file).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return null;
    throw err;
  });
  if (!st) return;
  if (!st.isSocket()) {
    const kind = st.isSymbolicLink()
      ? "a symlink"
      : st.isDirectory()
        ? "a directory"
        : st.isFile()
          ? "a regular file"
          : "not a socket";
    throw new BangerError(
      ErrorCode.Precondition,
      `${file} exists and is ${kind}, not a helper socket: banger-helper will not remove it`,
      "remove it yourself if it is not needed, or pick another --socket",
    );
  }
  if (await new HelperClient(file, { timeoutMs: 2_000 }).reachable()) {
    throw new BangerError(
      ErrorCode.AlreadyExists,
      `another banger-helper already serves ${file}`,
      "stop it first, or pick another --socket",
    );
  }
  await fs.unlink(file);
}

/**
 * Two users' helpers on one bridge or overlapping subnets would manage each other's
 * network: every other live helper socket in the directory is asked what it serves.
 */
async function checkSiblings(dir: string, own: string, pin: NetworkPin): Promise<void> {
  const names = await fs.readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    const file = path.join(dir, name);
    if (file === own || !name.endsWith(".sock")) continue;
    const st = await fs.lstat(file).catch(() => null);
    if (!st?.isSocket()) continue;
    const who = await new HelperClient(file, { timeoutMs: 2_000 }).ping().catch(() => null);
    if (!who) continue;
    if (who.bridge === pin.bridge || cidrsOverlap(who.subnet, pin.subnet)) {
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `the banger-helper at ${file} (uid ${who.uid}) already serves bridge ${who.bridge} with subnet ${who.subnet}, which ${who.bridge === pin.bridge ? "is" : "overlaps"} this helper's ${pin.bridge} ${pin.subnet}`,
        "give each user's helper its own --bridge and --subnet ('banger system install' picks free ones)",
      );
    }
  }
}
