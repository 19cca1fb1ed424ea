import type { PrivilegedOps, TapInfo } from "../../src/net/privileged.js";

/** A PrivilegedOps that records every call and keeps taps in memory, like the kernel would. */
export interface FakeOps extends PrivilegedOps {
  calls: string[];
  taps: Map<string, { bridge: string; ownerUid: number }>;
  /** Makes the next createTap calls fail (count). */
  failCreates: number;
  /** Delay each createTap by this many ms (lets tests overlap calls). */
  createDelayMs: number;
}

export function fakeOps(): FakeOps {
  const ops: FakeOps = {
    calls: [],
    taps: new Map(),
    failCreates: 0,
    createDelayMs: 0,
    async ensureBridge(name, gatewayCidr) {
      ops.calls.push(`ensureBridge ${name} ${gatewayCidr}`);
    },
    async createTap(name, bridge, ownerUid) {
      ops.calls.push(`createTap ${name} ${bridge} ${ownerUid}`);
      if (ops.createDelayMs > 0) await new Promise((r) => setTimeout(r, ops.createDelayMs));
      if (ops.failCreates > 0) {
        ops.failCreates--;
        throw new Error("no more taps today");
      }
      ops.taps.set(name, { bridge, ownerUid });
    },
    async deleteTap(name) {
      ops.calls.push(`deleteTap ${name}`);
      ops.taps.delete(name);
    },
    async listTaps(bridge): Promise<TapInfo[]> {
      ops.calls.push(`listTaps ${bridge}`);
      return [...ops.taps]
        .filter(([, t]) => t.bridge === bridge)
        .map(([name, t]) => ({ name, ownerUid: t.ownerUid }));
    },
    async ensureNat(subnet, bridge) {
      ops.calls.push(`ensureNat ${subnet} ${bridge}`);
    },
    async removeNat(bridge) {
      ops.calls.push(`removeNat ${bridge}`);
    },
    async routeResolver(bridge, dnsServer) {
      ops.calls.push(`routeResolver ${bridge} ${dnsServer}`);
    },
    async unrouteResolver(bridge) {
      ops.calls.push(`unrouteResolver ${bridge}`);
    },
  };
  return ops;
}
