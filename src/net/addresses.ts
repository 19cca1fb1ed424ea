import { BangerError, ErrorCode } from "../api/errors.js";

export interface Subnet {
  /** Network address as a 32-bit number. */
  base: number;
  prefix: number;
}

const toNum = (ip: string) => ip.split(".").reduce((n, o) => n * 256 + Number(o), 0);
export const toIp = (n: number) => [24, 16, 8, 0].map((s) => (n >>> s) & 255).join(".");

export function parseSubnet(cidr: string): Subnet {
  const [ip, prefix] = cidr.split("/");
  const p = Number(prefix);
  const mask = p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0;
  return { base: (toNum(ip!) & mask) >>> 0, prefix: p };
}

/** The bridge's own address: the first host of the subnet (.1 in a /24). */
export function gatewayOf(s: Subnet): string {
  return toIp(s.base + 1);
}

/** The lowest free guest address (after the gateway, before broadcast). */
export function allocateAddress(s: Subnet, taken: Set<string>): string {
  const size = 2 ** (32 - s.prefix);
  for (let i = 2; i < size - 1; i++) {
    const candidate = toIp(s.base + i);
    if (!taken.has(candidate)) return candidate;
  }
  throw new BangerError(
    ErrorCode.Busy,
    `no free address left in ${toIp(s.base)}/${s.prefix}`,
    "delete VMs you no longer need, or configure a larger [network] subnet",
  );
}

/** A stable locally-administered MAC from the VM id. */
export function macFor(id: string): string {
  const hex = id
    .replace(/[^0-9a-f]/g, "")
    .padEnd(10, "0")
    .slice(0, 10);
  return `52:54:${hex.match(/../g)!.slice(0, 4).join(":")}`;
}
