import fs from "node:fs";
import net from "node:net";
import { guestFrameAllowed, hostIpv4Addresses } from "./frame-filter.js";

/** QEMU's stream netdev and passt both frame packets as a 4-byte big-endian length, then the frame. */
const MAX_FRAME = 65_536 + 18;

/** Splits a byte stream into length-prefixed frames; a length beyond any Ethernet frame ends the stream. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  constructor(
    private readonly onFrame: (frame: Buffer) => void,
    private readonly onBad: () => void,
  ) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_FRAME) {
        this.buf = Buffer.alloc(0);
        this.onBad();
        return;
      }
      if (this.buf.length < 4 + len) return;
      this.onFrame(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
  }
}

export function frameBytes(frame: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(frame.length);
  return Buffer.concat([len, frame]);
}

/**
 * A gratuitous ARP from the guest: passt sends to the broadcast MAC until it has seen a
 * frame from the guest, and Linux drops TCP that arrives as broadcast, so a guest that
 * never talks first (static address, no DHCP) could not be reached on its SSH forward.
 */
export function gratuitousArp(mac: string, ip: string): Buffer {
  const hw = Buffer.from(mac.split(":").map((h) => Number.parseInt(h, 16)));
  const addr = Buffer.from(ip.split(".").map(Number));
  const header = Buffer.from([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
  return Buffer.concat([Buffer.alloc(6, 0xff), hw, header, hw, addr, Buffer.alloc(6), addr]);
}

export interface RelayOptions {
  /** Where QEMU connects (-netdev stream,server=off). */
  listenPath: string;
  /** passt's socket. */
  upstreamPath: string;
  /** The guest's MAC and address, announced to passt on its behalf. */
  guest: { mac: string; ip: string };
  /** How often the host's addresses are read again. */
  refreshMs?: number;
  log?: (line: string) => void;
}

/**
 * One VM's frame filter between QEMU and passt: guest frames pass only when
 * `guestFrameAllowed`; frames toward the guest pass as they are. Serves one QEMU
 * connection and resolves when either side goes away (passt -1 then exits too).
 */
export function runRelay(opts: RelayOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    let hostAddrs = hostIpv4Addresses();
    const refresh = setInterval(() => (hostAddrs = hostIpv4Addresses()), opts.refreshMs ?? 2000);
    let dropped = 0;
    const server = net.createServer();
    let guest: net.Socket | null = null;
    let upstream: net.Socket | null = null;
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      clearInterval(refresh);
      guest?.destroy();
      upstream?.destroy();
      server.close();
      fs.rmSync(opts.listenPath, { force: true });
      if (dropped > 0) opts.log?.(`dropped ${dropped} guest frames toward the host`);
      resolve();
    };
    server.once("error", (err) => {
      clearInterval(refresh);
      reject(err);
    });
    server.once("connection", (socket) => {
      server.close(); // one VM, one connection
      guest = socket;
      const up = net.createConnection(opts.upstreamPath);
      upstream = up;
      up.write(frameBytes(gratuitousArp(opts.guest.mac, opts.guest.ip)));
      const reader = new FrameReader((frame) => {
        if (!guestFrameAllowed(frame, hostAddrs)) dropped++;
        // Backpressure: a guest faster than passt waits instead of growing this process.
        else if (!up.write(frameBytes(frame))) {
          socket.pause();
          up.once("drain", () => socket.resume());
        }
      }, done);
      socket.on("data", (c: Buffer) => reader.push(c));
      // Toward the guest nothing needs looking at: passt's framing goes through unchanged.
      up.pipe(socket);
      for (const s of [socket, up]) {
        s.on("error", done);
        s.on("close", done);
      }
    });
    fs.rmSync(opts.listenPath, { force: true });
    server.listen(opts.listenPath);
  });
}
