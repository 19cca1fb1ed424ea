import { DEFAULT_BRIDGE, DEFAULT_SUBNET } from "../config/defaults.js";
import { helperSocketFor } from "../paths/helper-socket.js";
import type { PrivilegedProbe } from "../system/privileged-probe.js";
import type { CommandRunner } from "../system/runner.js";
import { HelperClient } from "./helper-client.js";
import { canonicalSubnet, checkPinAgainstHost, makePin } from "./pin.js";
import { createRootOps, type PrivilegedOps } from "./privileged.js";

/** The `[network]` values the pin is compared with. */
export interface NetworkChoice {
  bridge: string;
  subnet: string;
}

export interface PrivilegedModeDeps {
  env: Readonly<Record<string, string | undefined>>;
  uid: number;
  /** `[network] helper_socket`, when set. */
  configuredSocket: string | null;
  /** `[network]` bridge and subnet: a helper pinned to others is not used. */
  network?: NetworkChoice;
  /** Bound on asking the helper who it serves. */
  pingTimeoutMs?: number;
}

/** banger's defaults follow whatever the helper serves; anything else must be the helper's. */
function agrees(config: NetworkChoice, bridge: string, subnet: string): boolean {
  if (config.bridge === DEFAULT_BRIDGE && config.subnet === DEFAULT_SUBNET) return true;
  return config.bridge === bridge && canonicalSubnet(config.subnet) === subnet;
}

/**
 * In-process when the daemon is root (unless BANGER_PRIVILEGED=helper forces the
 * helper, as tests do); otherwise banger-helper when it answers on its socket,
 * serves this uid and a bridge and subnet the config agrees with; otherwise
 * nobody, with the reason.
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
  if (deps.uid === 0 && forced !== "helper") {
    // A root daemon pins itself to its config: one it could not pin is said here, not at start-up.
    if (deps.network) {
      try {
        makePin(deps.network.bridge, canonicalSubnet(deps.network.subnet));
      } catch (err) {
        return {
          mode: "none",
          socket: null,
          reason: `[network] cannot be served: ${err instanceof Error ? err.message : String(err)}`,
        };
      }
    }
    return { mode: "root" };
  }
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
    if (deps.network && !agrees(deps.network, who.bridge, who.subnet)) {
      return {
        mode: "none",
        socket,
        reason: `the banger-helper at ${socket} serves bridge ${who.bridge} with subnet ${who.subnet}, but [network] in the config says bridge ${deps.network.bridge}, subnet ${deps.network.subnet}: make them agree (or remove both keys to follow the helper)`,
      };
    }
    return {
      mode: "helper",
      socket,
      servedUid: who.uid,
      bridge: who.bridge,
      subnet: who.subnet,
    };
  } catch (err) {
    return { mode: "none", socket, reason: err instanceof Error ? err.message : String(err) };
  }
}

/**
 * The bridge and subnet the daemon will use: the helper's pin when a helper serves it, else
 * the config's, as a network address (what a root daemon pins itself to).
 */
export function pinnedNetwork<N extends NetworkChoice>(probe: PrivilegedProbe, config: N): N {
  if (probe.mode === "helper") return { ...config, bridge: probe.bridge, subnet: probe.subnet };
  return { ...config, subnet: canonicalSubnet(config.subnet) };
}

/**
 * The PrivilegedOps a probe found, or null for rootless networking. A root daemon pins its
 * in-process operations to its config's bridge and subnet, checked as the helper checks its own.
 */
export async function privilegedOpsFor(
  probe: PrivilegedProbe,
  runner: CommandRunner,
  network: NetworkChoice,
  uid: number,
): Promise<PrivilegedOps | null> {
  if (probe.mode === "root") {
    const pin = makePin(network.bridge, network.subnet);
    await checkPinAgainstHost(runner, pin);
    return createRootOps(runner, { pin, onlyForUid: uid });
  }
  if (probe.mode === "helper") return new HelperClient(probe.socket);
  return null;
}
