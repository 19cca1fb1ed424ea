import type { CommandRunner } from "../system/runner.js";
import { HelperClient } from "./helper-client.js";
import { helperSocketFor } from "./helper-protocol.js";
import { createRootOps, type PrivilegedOps } from "./privileged.js";

/** Who would run the privileged steps for a daemon of this uid, or why nobody can. */
export type PrivilegedProbe =
  | { mode: "root" }
  | { mode: "helper"; socket: string; servedUid: number }
  | { mode: "none"; socket: string | null; reason: string };

export interface PrivilegedModeDeps {
  env: Readonly<Record<string, string | undefined>>;
  uid: number;
  /** `[network] helper_socket`, when set. */
  configuredSocket: string | null;
  /** Bound on asking the helper who it serves. */
  pingTimeoutMs?: number;
}

/**
 * In-process when the daemon is root (unless BANGER_PRIVILEGED=helper forces the
 * helper, as tests do); otherwise banger-helper when it answers on its socket and
 * serves this uid; otherwise nobody, with the reason.
 */
export async function probePrivileged(deps: PrivilegedModeDeps): Promise<PrivilegedProbe> {
  const forced = deps.env.BANGER_PRIVILEGED;
  if (forced !== undefined && forced !== "" && forced !== "helper" && forced !== "root") {
    return {
      mode: "none",
      socket: null,
      reason: `BANGER_PRIVILEGED="${forced}" is not one of: root, helper`,
    };
  }
  if (deps.uid === 0 && forced !== "helper") return { mode: "root" };
  if (forced === "root")
    return { mode: "none", socket: null, reason: "BANGER_PRIVILEGED=root but bangerd is not root" };
  const socket = helperSocketFor(deps.env, deps.configuredSocket, deps.uid);
  try {
    const who = await new HelperClient(socket, {
      timeoutMs: deps.pingTimeoutMs ?? 5_000,
    }).ping();
    if (who.uid !== deps.uid) {
      return {
        mode: "none",
        socket,
        reason: `the banger-helper at ${socket} serves uid ${who.uid}, not ${deps.uid}`,
      };
    }
    return { mode: "helper", socket, servedUid: who.uid };
  } catch (err) {
    return { mode: "none", socket, reason: err instanceof Error ? err.message : String(err) };
  }
}

/** The PrivilegedOps a probe found, or null for rootless networking. */
export function privilegedOpsFor(
  probe: PrivilegedProbe,
  runner: CommandRunner,
): PrivilegedOps | null {
  if (probe.mode === "root") return createRootOps(runner);
  if (probe.mode === "helper") return new HelperClient(probe.socket);
  return null;
}
