import fs from "node:fs/promises";
import net from "node:net";
import type { MessageConnection } from "vscode-jsonrpc/node.js";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { Layout } from "../paths/layout.js";
import { Store } from "../store/store.js";
import type { CommandRunner } from "../system/runner.js";
import type { Driver } from "../vmm/driver.js";
import { acquirePidLock, defaultLockDeps, type LockDeps, type PidLock } from "./pid-lock.js";
import { refuseConnection } from "../util/jsonrpc-server.js";
import { serveConnection, type Handlers, type RpcLogger } from "./rpc-server.js";

export type StartupStep = "dirs" | "lock" | "store" | "listen" | "pidfile";

export interface DaemonLogger extends RpcLogger {
  info(obj: object, msg: string): void;
}

/** What the daemon is built from; tests replace any field. */
export interface DaemonDeps {
  layout: Layout;
  version: string;
  log: DaemonLogger;
  lock?: LockDeps;
  /** Environment the services read (catalog overrides, PATH); defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  /** How host tools are run; defaults to the real runner. */
  runner?: CommandRunner;
  /** The VMM driver; defaults to QEMU. */
  driver?: Driver;
  openStore?: (file: string) => Store;
  /** Builds the method handlers once the store is open. */
  handlers: (daemon: Daemon) => Handlers;
  /** Test seam: called after each start-up step succeeds; throwing aborts start-up there. */
  afterStep?: (step: StartupStep) => void | Promise<void>;
  /** A request started but not finished is given up on after this long without data. */
  rpcStallTimeoutMs?: number;
  /** Concurrent connections served before new ones are refused (default MAX_CONNECTIONS). */
  maxConnections?: number;
  /** Called once after a `daemon.shutdown` request has been answered. */
  onShutdownRequested?: () => void;
}

/**
 * The daemon's resources. `open` is all-or-nothing: a failure at any step undoes
 * the steps before it. `close` is idempotent and safe to call concurrently.
 */
export class Daemon {
  readonly startedAt = new Date();
  private closing: Promise<void> | null = null;
  private readonly connections = new Set<MessageConnection>();
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    readonly deps: DaemonDeps,
    readonly store: Store,
    private readonly server: net.Server,
    private readonly undo: Array<() => Promise<void> | void>,
  ) {}

  get layout(): Layout {
    return this.deps.layout;
  }

  static async open(deps: DaemonDeps): Promise<Daemon> {
    const { layout } = deps;
    const undo: Array<() => Promise<void> | void> = [];
    const step = async (name: StartupStep) => deps.afterStep?.(name);
    try {
      await fs.mkdir(layout.runtimeDir, { recursive: true, mode: 0o700 });
      await fs.mkdir(layout.stateDir, { recursive: true, mode: 0o700 });
      await step("dirs");

      const lock: PidLock = await acquirePidLock(layout.lockFile, deps.lock ?? defaultLockDeps);
      undo.push(() => lock.release());
      // The runtime dir follows XDG_RUNTIME_DIR, which cron, sudo or an ssh session may not
      // set: a second daemon there would share this state (and sweep the first one's work).
      const stateLock: PidLock = await acquirePidLock(
        layout.stateLockFile,
        deps.lock ?? defaultLockDeps,
        (owner) =>
          new BangerError(
            ErrorCode.Busy,
            `another bangerd (pid ${owner}) already uses ${layout.stateDir}, with another runtime dir (XDG_RUNTIME_DIR differs)`,
            `stop it ('kill ${owner}'), or run banger with the XDG_RUNTIME_DIR it was started with`,
          ),
      );
      undo.push(() => stateLock.release());
      await step("lock");

      const store = (deps.openStore ?? ((file) => Store.open(file)))(layout.dbFile);
      undo.push(() => store.close());
      await step("store");

      // We hold the lock, so any socket file left here belongs to a crashed daemon.
      await fs.rm(layout.socketFile, { force: true });
      // Clients may connect as soon as the socket exists (a CLI that started us polls for
      // it), before the handlers below are ready: hold those connections until then.
      let accept: ((socket: net.Socket) => void) | null = null;
      const early: net.Socket[] = [];
      const server = net.createServer((socket) => {
        if (accept) accept(socket);
        // Held ones count against the same limit as served ones.
        else if (early.length < (deps.maxConnections ?? MAX_CONNECTIONS)) early.push(socket);
        else socket.destroy();
      });
      await listen(server, layout.socketFile);
      // accept(2) failing (EMFILE when file descriptors run out) must not kill the daemon.
      server.on("error", (err) => deps.log.error({ err }, "accepting a connection failed"));
      undo.push(async () => {
        // close() waits for every connection to end: a held one never would.
        for (const socket of early.splice(0)) socket.destroy();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await fs.rm(layout.socketFile, { force: true });
      });
      await fs.chmod(layout.socketFile, 0o600);
      await step("listen");

      await fs.writeFile(layout.pidFile, `${process.pid}\n`, { mode: 0o600 });
      undo.push(() => fs.rm(layout.pidFile, { force: true }));
      await step("pidfile");

      const daemon = new Daemon(deps, store, server, undo);
      const handlers = deps.handlers(daemon);
      accept = (socket) => daemon.accept(socket, handlers);
      for (const socket of early.splice(0)) accept(socket);
      deps.log.info({ pid: process.pid, socket: layout.socketFile }, "bangerd listening");
      return daemon;
    } catch (err) {
      await runUndo(undo, deps.log);
      throw err;
    }
  }

  private accept(socket: net.Socket, handlers: Handlers): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    if (this.sockets.size >= (this.deps.maxConnections ?? MAX_CONNECTIONS)) {
      refuseConnection(
        socket,
        `too many connections (${this.sockets.size} open, the limit); try again shortly`,
      );
      return;
    }
    this.sockets.add(socket);
    const conn = serveConnection(
      socket,
      handlers,
      this.deps.log,
      this.deps.rpcStallTimeoutMs !== undefined
        ? { stallTimeoutMs: this.deps.rpcStallTimeoutMs }
        : {},
    );
    this.connections.add(conn);
    socket.on("close", () => {
      this.sockets.delete(socket);
      this.connections.delete(conn);
    });
  }

  /** Registers cleanup for something a service set up (DNS responder, ...); runs first on close. */
  addCloser(fn: () => Promise<void> | void): void {
    this.undo.push(fn);
  }

  /** Answer the shutdown request first, then close: the reply is written asynchronously, so give it a moment. */
  requestShutdown(): void {
    setTimeout(() => this.deps.onShutdownRequested?.(), 100);
  }

  get isClosed(): boolean {
    return this.closing !== null;
  }

  close(): Promise<void> {
    if (!this.closing) {
      this.closing = (async () => {
        // end() rather than destroy(): a reply already queued (e.g. to daemon.shutdown) still reaches the client.
        for (const socket of this.sockets) {
          socket.end();
          setTimeout(() => socket.destroy(), 1000).unref();
        }
        await runUndo(this.undo, this.deps.log);
        this.deps.log.info({}, "bangerd stopped");
      })();
    }
    return this.closing;
  }
}

/**
 * Concurrent client connections served at once. A CLI holds one or two; 256 leaves room for many
 * parallel `vm run`s while keeping a flood of connections far from the file descriptor limit.
 */
export const MAX_CONNECTIONS = 256;

function listen(server: net.Server, file: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      reject(
        new BangerError(
          ErrorCode.Precondition,
          `cannot listen on ${file}: ${err.message}`,
          "check the runtime directory's permissions",
        ),
      );
    };
    server.once("error", onError);
    server.listen(file, () => {
      server.off("error", onError);
      resolve();
    });
  });
}

/** Undo in reverse order; one failing step must not leave the others undone. */
async function runUndo(undo: Array<() => Promise<void> | void>, log: DaemonLogger): Promise<void> {
  while (undo.length > 0) {
    const fn = undo.pop()!;
    try {
      await fn();
    } catch (err) {
      log.error({ err }, "cleanup step failed");
    }
  }
}
