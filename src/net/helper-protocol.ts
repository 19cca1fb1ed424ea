import { z } from "zod";
import { isBangerDevice, isIpv4, isIpv4Cidr } from "./names.js";

/**
 * The banger-helper socket protocol: JSON-RPC 2.0 (vscode-jsonrpc framing), one
 * method per `PrivilegedOps` operation plus `ping`. Params are validated here, at
 * the socket boundary, before the root implementation checks them again.
 */
const device = z.string().refine(isBangerDevice, {
  message: "not one of banger's devices (prefix banger or bg-, ≤ 15 chars)",
});
const cidr = z.string().refine(isIpv4Cidr, { message: "not an IPv4 CIDR like 172.30.0.0/24" });
const ipv4 = z.string().refine(isIpv4, { message: "not an IPv4 address" });
const done = z.null();

export const helperMethods = {
  ping: {
    params: z.object({}).strict(),
    result: z.object({
      pong: z.literal(true),
      uid: z.number().int(),
      pid: z.number().int(),
      /** What the helper was pinned to at start: the daemon uses exactly these. */
      bridge: device,
      subnet: cidr,
    }),
  },
  ensureBridge: {
    params: z.object({ name: device, gatewayCidr: cidr }).strict(),
    result: done,
  },
  removeBridge: { params: z.object({ name: device }).strict(), result: done },
  createTap: {
    params: z
      .object({ name: device, bridge: device, ownerUid: z.number().int().nonnegative() })
      .strict(),
    result: done,
  },
  deleteTap: { params: z.object({ name: device }).strict(), result: done },
  listTaps: {
    params: z.object({ bridge: device }).strict(),
    result: z.array(z.object({ name: device, ownerUid: z.number().int().nullable() })),
  },
  listDetachedTaps: {
    params: z.object({}).strict(),
    result: z.array(
      z.object({ name: device, ownerUid: z.number().int().nullable(), open: z.boolean() }),
    ),
  },
  ensureNat: { params: z.object({ subnet: cidr, bridge: device }).strict(), result: done },
  removeNat: { params: z.object({ bridge: device }).strict(), result: done },
  routeResolver: { params: z.object({ bridge: device, dnsServer: ipv4 }).strict(), result: done },
  unrouteResolver: { params: z.object({ bridge: device }).strict(), result: done },
} as const;

/**
 * The largest message either side reads. Requests carry device names and CIDRs, answers a list
 * of taps; the bound stays above a few MiB so an absurd name is still refused by name (the
 * hostile table sends 1 MiB), and far below what would tax a root process's memory.
 */
export const MAX_HELPER_MESSAGE_BYTES = 4 * 1024 * 1024;

export type HelperMethod = keyof typeof helperMethods;
export const helperMethodNames = Object.keys(helperMethods) as HelperMethod[];
export type HelperParams<M extends HelperMethod> = z.infer<(typeof helperMethods)[M]["params"]>;
export type HelperResult<M extends HelperMethod> = z.infer<(typeof helperMethods)[M]["result"]>;
