import { BangerError, ErrorCode } from "../api/errors.js";
import { runChecked, type CommandRunner } from "../system/runner.js";
import { gatewayOf, parseSubnet, toIp } from "./addresses.js";
import { isBangerDevice, isIpv4Cidr } from "./names.js";

/**
 * The one bridge and private subnet a set of privileged operations serves, fixed when the
 * helper (or a root daemon) starts, never taken from a caller. Everything written to the host
 * (bridge address, NAT rule, resolver route) is derived from these values.
 */
export interface NetworkPin {
  bridge: string;
  /** Canonical network, e.g. 172.30.0.0/24. */
  subnet: string;
  prefix: number;
  /** The bridge's own address (first host), without prefix. */
  gateway: string;
}

const PRIVATE: Array<[string, number]> = [
  ["10.0.0.0", 8],
  ["172.16.0.0", 12],
  ["192.168.0.0", 16],
];

/** `172.30.0.5/24` → `172.30.0.0/24`: the network a config's subnet names. */
export function canonicalSubnet(cidr: string): string {
  const s = parseSubnet(cidr);
  return `${toIp(s.base)}/${s.prefix}`;
}

/** [first, last] addresses of a CIDR as numbers. */
function range(cidr: string): [number, number] {
  const s = parseSubnet(cidr.includes("/") ? cidr : `${cidr}/32`);
  return [s.base, s.base + 2 ** (32 - s.prefix) - 1];
}

export function cidrsOverlap(a: string, b: string): boolean {
  const [a0, a1] = range(a);
  const [b0, b1] = range(b);
  return a0 <= b1 && b0 <= a1;
}

function within(inner: string, outer: string): boolean {
  const [i0, i1] = range(inner);
  const [o0, o1] = range(outer);
  return o0 <= i0 && i1 <= o1;
}

function refuse(message: string, hint: string): never {
  throw new BangerError(ErrorCode.InvalidParams, message, hint);
}

const PIN_HINT =
  "pass --bridge banger<something> and --subnet with a private range such as 172.30.0.0/24 (see docs/helper.md)";

/**
 * A pin from a bridge name and a subnet, or a clear refusal: banger's prefix, an RFC 1918
 * network between /16 and /29 (as `[network] subnet` allows), given as its network address.
 */
export function makePin(bridge: string, subnet: string): NetworkPin {
  // bg- names are taps: a bridge is banger*.
  if (!isBangerDevice(bridge) || !bridge.startsWith("banger"))
    refuse(
      `bridge "${bridge}" is not a banger bridge name (prefix banger, at most 15 letters, digits, '.', '_' or '-')`,
      PIN_HINT,
    );
  if (!isIpv4Cidr(subnet))
    refuse(`subnet "${subnet}" is not an IPv4 CIDR like 172.30.0.0/24`, PIN_HINT);
  const s = parseSubnet(subnet);
  const canonical = `${toIp(s.base)}/${s.prefix}`;
  if (canonical !== subnet)
    refuse(`subnet "${subnet}" is not a network address: did you mean ${canonical}?`, PIN_HINT);
  if (s.prefix < 16 || s.prefix > 29)
    refuse(`subnet ${subnet}: prefix /${s.prefix} must be between /16 and /29`, PIN_HINT);
  if (!PRIVATE.some(([net, p]) => within(subnet, `${net}/${p}`)))
    refuse(
      `subnet ${subnet} is not a private (RFC 1918) range: a bridge there would route real internet addresses to banger's VMs`,
      "use a subnet inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16, e.g. 172.30.0.0/24",
    );
  return { bridge, subnet, prefix: s.prefix, gateway: gatewayOf(s) };
}

/** `ip -j -4 route` / `ip -j -4 addr` as far as the overlap check reads them. */
interface IpRoute {
  dst?: string;
  dev?: string;
}
interface IpAddr {
  ifname?: string;
  addr_info?: Array<{ family?: string; local?: string; prefixlen?: number }>;
}

function parseJson<T>(text: string, what: string): T[] {
  try {
    const v: unknown = JSON.parse(text || "[]");
    return Array.isArray(v) ? (v as T[]) : [];
  } catch {
    throw new BangerError(ErrorCode.Internal, `could not read the output of ${what}`);
  }
}

/**
 * The pin's subnet must not overlap a network the host already has on another interface:
 * a bridge there would steal that network's traffic. Its own bridge (a restart) is fine.
 */
export async function checkPinAgainstHost(runner: CommandRunner, pin: NetworkPin): Promise<void> {
  const clashes: string[] = [];
  const routes = parseJson<IpRoute>(
    (await runChecked(runner, "ip", ["-j", "-4", "route", "show"])).stdout,
    "ip -j -4 route show",
  );
  for (const r of routes) {
    if (!r.dst || r.dst === "default" || r.dev === pin.bridge) continue;
    if (!isIpv4Cidr(r.dst.includes("/") ? r.dst : `${r.dst}/32`)) continue;
    if (cidrsOverlap(r.dst, pin.subnet)) clashes.push(`route ${r.dst} via ${r.dev ?? "?"}`);
  }
  const links = parseJson<IpAddr>(
    (await runChecked(runner, "ip", ["-j", "-4", "addr", "show"])).stdout,
    "ip -j -4 addr show",
  );
  for (const link of links) {
    if (link.ifname === pin.bridge) continue;
    for (const a of link.addr_info ?? []) {
      if (a.family !== "inet" || !a.local || a.prefixlen === undefined) continue;
      const cidr = `${a.local}/${a.prefixlen}`;
      if (isIpv4Cidr(cidr) && cidrsOverlap(cidr, pin.subnet))
        clashes.push(`address ${cidr} on ${link.ifname ?? "?"}`);
    }
  }
  if (clashes.length > 0)
    throw new BangerError(
      ErrorCode.Precondition,
      `subnet ${pin.subnet} overlaps a network this host already uses (${[...new Set(clashes)].join(", ")})`,
      "pick a free private subnet with --subnet (or [network] subnet for a root daemon), e.g. 172.30.<n>.0/24",
    );
}

/** A pinned check failed: what was asked, what this helper serves. */
function outside(what: string, pin: NetworkPin): never {
  throw new BangerError(
    ErrorCode.InvalidParams,
    `refusing ${what}: this helper serves only bridge ${pin.bridge} with subnet ${pin.subnet}`,
    "set [network] bridge and subnet to the helper's (banger doctor shows them), or start the helper with --bridge/--subnet",
  );
}

export function requirePinnedBridge(pin: NetworkPin, bridge: string, what: string): void {
  if (bridge !== pin.bridge) outside(`${what} on bridge "${bridge}"`, pin);
}

/** The gateway CIDR must be exactly the pinned bridge address with the pinned prefix. */
export function requirePinnedGateway(pin: NetworkPin, gatewayCidr: string): void {
  if (gatewayCidr !== `${pin.gateway}/${pin.prefix}`)
    outside(`bridge address "${gatewayCidr}" (expected ${pin.gateway}/${pin.prefix})`, pin);
}

export function requirePinnedSubnet(pin: NetworkPin, subnet: string): void {
  if (subnet !== pin.subnet) outside(`NAT for "${subnet}"`, pin);
}

export function requirePinnedDns(pin: NetworkPin, server: string): void {
  if (server !== pin.gateway)
    outside(`resolver routing to "${server}" (expected ${pin.gateway})`, pin);
}
