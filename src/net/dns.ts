import dgram from "node:dgram";
import dnsPacket from "dns-packet";

const RCODE = { FORMERR: 1, NXDOMAIN: 3, REFUSED: 5 } as const;

/**
 * Answers A queries for `<name>.vm` with the VM's address; NXDOMAIN for unknown
 * `.vm` names; REFUSED for anything outside `.vm` (it is not a resolver).
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

  /** The reply for one query packet, or null for garbage. */
  answer(msg: Buffer): Buffer | null {
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return null;
    }
    const question = query.questions?.[0];
    const base = { id: query.id, type: "response" as const, questions: query.questions ?? [] };
    // dns-packet takes the response code as the low 4 bits of flags.
    if (!question) return dnsPacket.encode({ ...base, flags: RCODE.FORMERR });
    const name = question.name.toLowerCase().replace(/\.$/, "");
    if (!name.endsWith(".vm")) return dnsPacket.encode({ ...base, flags: RCODE.REFUSED });
    const address = this.lookup(name.slice(0, -3));
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
