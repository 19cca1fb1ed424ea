import dgram from "node:dgram";
import dnsPacket from "dns-packet";
import { VM_NAME } from "../api/vm-names.js";

const RCODE = { FORMERR: 1, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;

/** A query is small: nothing bigger is read (a name is at most 255 bytes, EDNS adds little). */
export const MAX_QUERY_BYTES = 512;
const HEADER_BYTES = 12;

/**
 * Answers A queries for `<name>.vm` with the VM's address; NXDOMAIN for unknown
 * `.vm` names; REFUSED for anything outside `.vm` (it is not a resolver).
 * Responses (QR=1), short or oversized packets and undecodable ones get no
 * answer at all: answering a response lets two responders loop, and no reply
 * is ever larger than the query by more than one A record.
 */
export class DnsResponder {
  private socket: dgram.Socket | null = null;

  constructor(private readonly lookup: (vmName: string) => string | null) {}

  async start(host: string, port: number): Promise<number> {
    const socket = dgram.createSocket("udp4");
    socket.on("message", (msg, rinfo) => {
      const reply = this.answer(msg);
      if (reply) socket.send(reply, rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(port, host, () => {
        socket.off("error", reject);
        resolve();
      });
    });
    socket.on("error", () => {});
    this.socket = socket;
    return socket.address().port;
  }

  /** The reply for one query packet, or null when it deserves none. */
  answer(msg: Buffer): Buffer | null {
    if (msg.length < HEADER_BYTES || msg.length > MAX_QUERY_BYTES) return null;
    const id = msg.readUInt16BE(0);
    const flags = msg.readUInt16BE(2);
    if (flags & 0x8000) return null; // QR=1: a response, never answered
    // Header-only errors (no question echoed): never larger than what came in.
    const header = (rcode: number) => dnsPacket.encode({ id, type: "response", flags: rcode });
    if (((flags >> 11) & 0xf) !== 0) return header(RCODE.NOTIMP); // not a standard QUERY
    const qdcount = msg.readUInt16BE(4);
    const ancount = msg.readUInt16BE(6);
    const nscount = msg.readUInt16BE(8);
    const arcount = msg.readUInt16BE(10);
    // One question, nothing else but at most one OPT record: what a stub resolver sends.
    if (qdcount !== 1 || ancount !== 0 || nscount !== 0 || arcount > 1)
      return header(RCODE.FORMERR);
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return null;
    }
    const question = query.questions?.[0];
    if (!question) return header(RCODE.FORMERR);
    const base = { id, type: "response" as const, questions: [question] };
    // dns-packet takes the response code as the low 4 bits of flags.
    const classIn = question.class === undefined || question.class === "IN";
    if (!classIn || question.type === "AXFR" || question.type === "IXFR")
      return dnsPacket.encode({ ...base, flags: RCODE.REFUSED });
    const name = question.name.toLowerCase().replace(/\.$/, "");
    if (!name.endsWith(".vm")) return dnsPacket.encode({ ...base, flags: RCODE.REFUSED });
    const vmName = name.slice(0, -3);
    const address = VM_NAME.test(vmName) ? this.lookup(vmName) : null;
    if (!address)
      return dnsPacket.encode({ ...base, flags: dnsPacket.AUTHORITATIVE_ANSWER | RCODE.NXDOMAIN });
    const answers =
      question.type === "A"
        ? [{ type: "A" as const, name: question.name, ttl: 5, data: address }]
        : [];
    return dnsPacket.encode({ ...base, flags: dnsPacket.AUTHORITATIVE_ANSWER, answers });
  }

  async stop(): Promise<void> {
    const socket = this.socket;
    this.socket = null;
    if (socket) await new Promise<void>((resolve) => socket.close(() => resolve()));
  }
}
