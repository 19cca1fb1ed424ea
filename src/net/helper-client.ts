import net from "node:net";
import {
  createMessageConnection,
  ResponseError,
  SocketMessageWriter,
} from "vscode-jsonrpc/node.js";
import { BangerError, ErrorCode, type ErrorCodeValue } from "../api/errors.js";
import { CappedMessageReader } from "../util/jsonrpc-reader.js";
import {
  helperMethods,
  MAX_HELPER_MESSAGE_BYTES,
  type HelperMethod,
  type HelperParams,
  type HelperResult,
} from "./helper-protocol.js";
import type { DetachedTapInfo, PrivilegedOps, TapInfo } from "./privileged.js";

const KNOWN_CODES = new Set<number>(Object.values(ErrorCode));

/**
 * `PrivilegedOps` over banger-helper's socket: one short connection per call,
 * so a helper restart between calls costs nothing. Every call is bounded.
 */
export class HelperClient implements PrivilegedOps {
  private readonly timeoutMs: number;

  constructor(
    readonly socketPath: string,
    opts: { timeoutMs?: number } = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  private connect(): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(this.socketPath);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(this.unreachable("no answer"));
      }, this.timeoutMs);
      socket.once("connect", () => {
        clearTimeout(timer);
        socket.removeAllListeners("error");
        socket.on("error", () => {});
        resolve(socket);
      });
      socket.once("error", (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(this.unreachable(err.code ?? err.message));
      });
    });
  }

  private unreachable(why: string): BangerError {
    return new BangerError(
      ErrorCode.Precondition,
      `banger-helper is not reachable at ${this.socketPath} (${why})`,
      "start it as root: sudo banger-helper --user $USER (see docs/helper.md)",
    );
  }

  private async call<M extends HelperMethod>(
    method: M,
    params: HelperParams<M>,
  ): Promise<HelperResult<M>> {
    const socket = await this.connect();
    // Bounded like the helper's own reader; the call's timeout bounds a stalled answer.
    const conn = createMessageConnection(
      new CappedMessageReader(socket, {
        maxMessageBytes: MAX_HELPER_MESSAGE_BYTES,
        stallTimeoutMs: this.timeoutMs,
      }),
      new SocketMessageWriter(socket),
    );
    conn.listen();
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new BangerError(
                ErrorCode.Internal,
                `banger-helper did not answer ${method} within ${this.timeoutMs / 1000}s`,
              ),
            ),
          this.timeoutMs,
        );
      });
      const closed = new Promise<never>((_, reject) =>
        socket.once("close", () =>
          reject(new BangerError(ErrorCode.Internal, `banger-helper hung up during ${method}`)),
        ),
      );
      const raw = await Promise.race([conn.sendRequest(method, params), timeout, closed]);
      return helperMethods[method].result.parse(raw) as HelperResult<M>;
    } catch (err) {
      if (err instanceof ResponseError) {
        const data = err.data as { hint?: unknown } | undefined;
        const code = (KNOWN_CODES.has(err.code) ? err.code : ErrorCode.Internal) as ErrorCodeValue;
        throw new BangerError(
          code,
          err.message,
          typeof data?.hint === "string" ? data.hint : undefined,
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
      conn.dispose();
      socket.destroy();
    }
  }

  /** Who the helper serves; throws with a hint when it does not answer. */
  ping(): Promise<HelperResult<"ping">> {
    return this.call("ping", {});
  }

  /** True when a helper answers on the socket. */
  async reachable(): Promise<boolean> {
    return this.ping().then(
      () => true,
      () => false,
    );
  }

  async ensureBridge(name: string, gatewayCidr: string): Promise<void> {
    await this.call("ensureBridge", { name, gatewayCidr });
  }
  async removeBridge(name: string): Promise<void> {
    await this.call("removeBridge", { name });
  }
  async createTap(name: string, bridge: string, ownerUid: number): Promise<void> {
    await this.call("createTap", { name, bridge, ownerUid });
  }
  async deleteTap(name: string): Promise<void> {
    await this.call("deleteTap", { name });
  }
  listTaps(bridge: string): Promise<TapInfo[]> {
    return this.call("listTaps", { bridge });
  }
  listDetachedTaps(): Promise<DetachedTapInfo[]> {
    return this.call("listDetachedTaps", {});
  }
  async ensureNat(subnet: string, bridge: string): Promise<void> {
    await this.call("ensureNat", { subnet, bridge });
  }
  async removeNat(bridge: string): Promise<void> {
    await this.call("removeNat", { bridge });
  }
  async routeResolver(bridge: string, dnsServer: string): Promise<void> {
    await this.call("routeResolver", { bridge, dnsServer });
  }
  async unrouteResolver(bridge: string): Promise<void> {
    await this.call("unrouteResolver", { bridge });
  }
}
