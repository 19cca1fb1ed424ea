import fs from "node:fs";
import os from "node:os";

/**
 * Which Ethernet frames a user-mode (passt) guest may send. passt opens a host socket to
 * whatever IPv4 destination a frame names, and a root guest can write any frame, so the
 * host's own addresses are refused here, before passt sees them: loopback (127/8), "this
 * host" (0/8, which Linux connects to locally) and every address of the host's interfaces.
 * Only ARP and IPv4 pass (passt runs with -4); IPv6, VLAN tags and the rest are dropped.
 */
export function guestFrameAllowed(frame: Buffer, hostAddresses: ReadonlySet<string>): boolean {
  if (frame.length < 14) return false;
  const type = frame.readUInt16BE(12);
  if (type === 0x0806) return true; // ARP
  if (type !== 0x0800) return false;
  if (frame.length < 34 || frame[14]! >> 4 !== 4) return false;
  const dst = `${frame[30]}.${frame[31]}.${frame[32]}.${frame[33]}`;
  const first = frame[30]!;
  if (first === 127 || first === 0) return false;
  return !hostAddresses.has(dst);
}

/**
 * The host's IPv4 addresses right now (they change while a VM runs: callers refresh). The
 * kernel's local routes, which include addresses on interfaces without carrier that
 * os.networkInterfaces() leaves out, plus what that lists.
 */
export function hostIpv4Addresses(fibTrie = readFibTrie()): Set<string> {
  const out = new Set<string>();
  let last: string | null = null;
  for (const line of fibTrie.split("\n")) {
    const leaf = /\|-- (\d+\.\d+\.\d+\.\d+)$/.exec(line);
    if (leaf) last = leaf[1]!;
    else if (last && /\/32 host LOCAL/.test(line)) out.add(last);
  }
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) if (a.family === "IPv4") out.add(a.address);
  return out;
}

function readFibTrie(): string {
  try {
    return fs.readFileSync("/proc/net/fib_trie", "utf8");
  } catch {
    return "";
  }
}
