/** What banger lets into `ip` arguments and nft scripts: its own device names, plain IPv4. */
export const BRIDGE_PREFIX = "banger";
/** Every tap banger makes is named this and 12 hex digits (15 characters, IFNAMSIZ - 1). */
export const TAP_PREFIX = "bg-";
const PREFIXES = [BRIDGE_PREFIX, TAP_PREFIX];

/** A network device banger may touch: its prefix and a valid interface name (at most 15 characters). */
export function isBangerDevice(name: string): boolean {
  return PREFIXES.some((p) => name.startsWith(p)) && /^[A-Za-z0-9_.-]{1,15}$/.test(name);
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

export function isIpv4(text: string): boolean {
  return IPV4.test(text);
}

/** `a.b.c.d/n`: these strings end up in `ip` arguments and an nft script, so nothing else passes. */
export function isIpv4Cidr(text: string): boolean {
  const [addr, prefix, ...rest] = text.split("/");
  return (
    rest.length === 0 &&
    addr !== undefined &&
    isIpv4(addr) &&
    prefix !== undefined &&
    /^\d{1,2}$/.test(prefix) &&
    Number(prefix) <= 32
  );
}
