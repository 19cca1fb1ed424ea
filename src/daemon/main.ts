import pino from "pino";
import { BangerError } from "../api/errors.js";
import { AGENT_ENV } from "../guest/ssh.js";
import { resolveLayout } from "../paths/layout.js";
import { bangerVersion } from "../version.js";
import { buildHandlers } from "./handlers.js";
import { Daemon } from "./server.js";

/** bangerd: runs in the foreground; `banger` starts it detached with output sent to the daemon log. */
export async function main(): Promise<void> {
  // However it was started (systemd imports the session's environment), the daemon and every
  // ssh it runs toward a guest never hold the user's agent socket.
  for (const k of AGENT_ENV) delete process.env[k];
  const log = pino({ name: "bangerd" }, pino.destination(2));
  const layout = resolveLayout();
  let daemon: Daemon | null = null;
  const stop = (signal: string) => {
    log.info({ signal }, "stopping");
    void (daemon?.close() ?? Promise.resolve()).then(() => process.exit(0));
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  try {
    daemon = await Daemon.open({
      layout,
      version: bangerVersion(),
      log,
      handlers: buildHandlers,
      onShutdownRequested: () => stop("daemon.shutdown"),
      // Tests shorten how long a half-sent request may stall; users never need to.
      ...envMs("BANGER_RPC_STALL_TIMEOUT_MS", "rpcStallTimeoutMs"),
    });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const hint = err instanceof BangerError && err.hint ? `\n  hint: ${err.hint}` : "";
    process.stderr.write(`bangerd: error: ${message}${hint}\n`);
    process.exit(1);
  }
}

function envMs<K extends string>(name: string, key: K): { [P in K]?: number } {
  const value = Number(process.env[name]);
  return Number.isInteger(value) && value > 0 ? ({ [key]: value } as { [P in K]?: number }) : {};
}
