// Raw Ethernet/IPv4/TCP frames, as a root guest can write them, for the user-mode network
// tests: they speak QEMU's stream netdev protocol (4-byte length, then the frame).
import net from "node:net";

function checksum(buf: Buffer): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i += 2) sum += (buf[i]! << 8) + (buf[i + 1] ?? 0);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

const ip4 = (s: string) => Buffer.from(s.split(".").map(Number));
export const GUEST_MAC = Buffer.from([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/** A TCP SYN from `src` to `dst:dport`, with Ethernet header. */
export function synFrame(src: string, dst: string, sport: number, dport: number): Buffer {
  const tcp = Buffer.alloc(20);
  tcp.writeUInt16BE(sport, 0);
  tcp.writeUInt16BE(dport, 2);
  tcp.writeUInt32BE(1000, 4);
  tcp[12] = 5 << 4;
  tcp[13] = 0x02;
  tcp.writeUInt16BE(65535, 14);
  tcp.writeUInt16BE(
    checksum(Buffer.concat([ip4(src), ip4(dst), Buffer.from([0, 6, 0, 20]), tcp])),
    16,
  );
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(40, 2);
  ip.writeUInt16BE(1, 4);
  ip[8] = 64;
  ip[9] = 6;
  ip4(src).copy(ip, 12);
  ip4(dst).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  const eth = Buffer.concat([
    Buffer.from([0x9a, 0x55, 0x9a, 0x55, 0x9a, 0x55]),
    GUEST_MAC,
    Buffer.from([8, 0]),
  ]);
  return Buffer.concat([eth, ip, tcp]);
}

export function ethFrame(type: number, payload: Buffer): Buffer {
  const t = Buffer.alloc(2);
  t.writeUInt16BE(type);
  return Buffer.concat([Buffer.alloc(6, 0xff), GUEST_MAC, t, payload]);
}

export function framed(frame: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(frame.length);
  return Buffer.concat([len, frame]);
}

/** A fake QEMU on a stream socket: sends frames, and collects the TCP SYN-ACKs it gets back (by source). */
export async function fakeGuest(socketPath: string): Promise<{
  send(frame: Buffer): void;
  synAcksFrom: Set<string>;
  /** Destination MACs of the TCP frames that came in (broadcast means passt did not know the guest). */
  tcpTo: Set<string>;
  close(): void;
}> {
  const socket = net.createConnection(socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  const synAcksFrom = new Set<string>();
  const tcpTo = new Set<string>();
  let buf = Buffer.alloc(0);
  socket.on("data", (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 4 && buf.length >= 4 + buf.readUInt32BE(0)) {
      const f = buf.subarray(4, 4 + buf.readUInt32BE(0));
      buf = buf.subarray(4 + f.length);
      const tcp = f.length >= 54 && f.readUInt16BE(12) === 0x0800 && f[23] === 6;
      if (tcp) tcpTo.add(f.subarray(0, 6).toString("hex"));
      if (tcp && (f[47]! & 0x12) === 0x12)
        synAcksFrom.add(`${f[26]}.${f[27]}.${f[28]}.${f[29]}:${f.readUInt16BE(34)}`);
    }
  });
  socket.on("error", () => {});
  return {
    send: (frame) => socket.write(framed(frame)),
    synAcksFrom,
    tcpTo,
    close: () => socket.destroy(),
  };
}
