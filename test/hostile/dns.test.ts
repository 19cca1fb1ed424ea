// Hostile DNS packets against the real `.vm` responder on 127.0.0.1 (a free port): whatever a
// guest sends it, the responder answers only proper queries, never answers a response (two
// responders would loop), never replies bigger than asked, and keeps answering.
import assert from "node:assert/strict";
import dgram from "node:dgram";
import { after, before, test } from "node:test";
import dnsPacket from "dns-packet";
import { DnsResponder } from "../../src/net/dns.js";
import type { HostileRow } from "./harness.js";

let responder: DnsResponder;
let port: number;
let client: dgram.Socket;

before(async () => {
  responder = new DnsResponder((name) => (name === "dev" ? "172.30.0.2" : null));
  port = await responder.start("127.0.0.1", 0);
  client = dgram.createSocket("udp4");
  await new Promise<void>((resolve) => client.bind(0, "127.0.0.1", () => resolve()));
});

after(async () => {
  client.close();
  await responder.stop();
});

/** Sends one datagram; the reply, or null when none came within `ms`. */
function exchange(packet: Buffer, ms = 250): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const onMessage = (m: Buffer) => {
      clearTimeout(timer);
      client.off("message", onMessage);
      resolve(m);
    };
    const timer = setTimeout(() => {
      client.off("message", onMessage);
      resolve(null);
    }, ms);
    client.on("message", onMessage);
    client.send(packet, port, "127.0.0.1");
  });
}

/** Drains replies still in flight (after a flood) so the next exchange sees its own. */
async function drain(ms = 300): Promise<number> {
  let n = 0;
  const count = () => n++;
  client.on("message", count);
  await new Promise((r) => setTimeout(r, ms));
  client.off("message", count);
  return n;
}

const query = (name: string, extra: Partial<dnsPacket.Packet> = {}, type = "A") =>
  dnsPacket.encode({
    type: "query",
    id: 4242,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as "A", name }],
    ...extra,
  });

/** A header: id, flags, qd/an/ns/ar counts. */
function header(flags: number, qd: number, an = 0, ns = 0, ar = 0, id = 7): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(flags, 2);
  b.writeUInt16BE(qd, 4);
  b.writeUInt16BE(an, 6);
  b.writeUInt16BE(ns, 8);
  b.writeUInt16BE(ar, 10);
  return b;
}
/** A question from raw labels (no validation: that is the point). */
function question(labels: Buffer[], type = 1, cls = 1): Buffer {
  const parts: Buffer[] = [];
  for (const l of labels) parts.push(Buffer.from([l.length & 0xff]), l);
  parts.push(Buffer.from([0]));
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(cls, 2);
  return Buffer.concat([...parts, tail]);
}
const L = (s: string) => Buffer.from(s, "latin1");

const rcodeOf = (reply: Buffer) => reply.readUInt16BE(2) & 0xf;
const RCODES: Record<string, number> = {
  NOERROR: 0,
  FORMERR: 1,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
};

/** What a packet may get back: nothing, or a response with one of these codes (no bigger than allowed). */
interface Packet {
  bytes: Buffer;
  /** null: no answer at all. */
  reply: null | string[];
}

const response = dnsPacket.encode({
  type: "response",
  id: 9,
  flags: dnsPacket.AUTHORITATIVE_ANSWER,
  questions: [{ type: "A", name: "dev.vm" }],
  answers: [{ type: "A", name: "dev.vm", ttl: 5, data: "172.30.0.2" }],
});
const selfPointer = Buffer.concat([header(0x0100, 1), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
const pointerPair = Buffer.concat([
  header(0x0100, 1),
  Buffer.from([0xc0, 14, 0xc0, 12, 0, 1, 0, 1]),
]);
const forward = Buffer.concat([header(0x0100, 1), Buffer.from([0xc0, 200, 0, 1, 0, 1])]);
const longLabel = Buffer.concat([
  header(0x0100, 1),
  Buffer.from([63]),
  Buffer.alloc(63, 0x61),
  Buffer.from([200]),
  Buffer.alloc(20, 0x62),
]);
const many = Buffer.concat([
  header(0x0100, 50),
  ...Array.from({ length: 50 }, () => question([L("dev"), L("vm")])),
]);

const rows: Array<HostileRow<Packet>> = [
  {
    name: "a response (QR=1) to our own name",
    input: { bytes: response, reply: null },
    expect: null,
  },
  {
    name: "a response with the query's shape (QR=1, no answers)",
    input: {
      bytes: Buffer.concat([header(0x8100, 1), question([L("dev"), L("vm")])]),
      reply: null,
    },
    expect: null,
  },
  { name: "zero-length datagram", input: { bytes: Buffer.alloc(0), reply: null }, expect: null },
  { name: "one byte", input: { bytes: Buffer.from([0x12]), reply: null }, expect: null },
  {
    name: "truncated header (11 bytes)",
    input: { bytes: Buffer.alloc(11), reply: null },
    expect: null,
  },
  {
    name: "header only, qdcount 1, no question",
    input: { bytes: header(0x0100, 1), reply: null },
    expect: null,
  },
  {
    name: "question cut in the middle of a label",
    input: { bytes: Buffer.concat([header(0x0100, 1), Buffer.from([3, 0x64, 0x65])]), reply: null },
    expect: null,
  },
  {
    name: "64 KiB of garbage",
    input: { bytes: Buffer.alloc(65_000, 0xab), reply: null },
    expect: null,
  },
  {
    name: "a valid query padded past 512 bytes",
    input: { bytes: Buffer.concat([query("dev.vm"), Buffer.alloc(600)]), reply: null },
    expect: null,
  },
  {
    name: "compression pointer to itself",
    input: { bytes: selfPointer, reply: null },
    expect: null,
  },
  {
    name: "two pointers pointing at each other",
    input: { bytes: pointerPair, reply: null },
    expect: null,
  },
  { name: "pointer past the end", input: { bytes: forward, reply: null }, expect: null },
  { name: "label length 200 (> 63)", input: { bytes: longLabel, reply: null }, expect: null },
  { name: "qdcount 0", input: { bytes: header(0x0100, 0), reply: ["FORMERR"] }, expect: null },
  // 612 bytes: over the 512 a query may have, so not even read.
  { name: "qdcount 50", input: { bytes: many, reply: null }, expect: null },
  {
    name: "qdcount 2",
    input: {
      bytes: Buffer.concat([
        header(0x0100, 2),
        question([L("dev"), L("vm")]),
        question([L("dev"), L("vm")]),
      ]),
      reply: ["FORMERR"],
    },
    expect: null,
  },
  {
    name: "qdcount 65535 with one question",
    input: {
      bytes: Buffer.concat([header(0x0100, 65535), question([L("dev"), L("vm")])]),
      reply: ["FORMERR"],
    },
    expect: null,
  },
  {
    name: "answers in a query (ancount 3)",
    input: {
      bytes: Buffer.concat([header(0x0100, 1, 3), question([L("dev"), L("vm")])]),
      reply: ["FORMERR"],
    },
    expect: null,
  },
  {
    name: "opcode NOTIFY",
    input: {
      bytes: Buffer.concat([header(0x2000 | 0x0100, 1), question([L("dev"), L("vm")])]),
      reply: ["NOTIMP"],
    },
    expect: null,
  },
  {
    name: "opcode UPDATE",
    input: {
      bytes: Buffer.concat([header(0x2800, 1), question([L("dev"), L("vm")])]),
      reply: ["NOTIMP"],
    },
    expect: null,
  },
  {
    name: "opcode 15 (reserved)",
    input: {
      bytes: Buffer.concat([header(0x7800, 1), question([L("dev"), L("vm")])]),
      reply: ["NOTIMP"],
    },
    expect: null,
  },
  {
    name: "an empty label (dev..vm): the name ends early, the rest is junk type and class",
    input: {
      bytes: Buffer.concat([
        header(0x0100, 1),
        Buffer.from([3]),
        L("dev"),
        Buffer.from([0, 2]),
        L("vm"),
        Buffer.from([0, 0, 1, 0, 1]),
      ]),
      reply: ["REFUSED"],
    },
    expect: null,
  },
  {
    name: "a label holding a dot (de.v + vm)",
    input: {
      bytes: Buffer.concat([header(0x0100, 1), question([L("de.v"), L("vm")])]),
      reply: ["NXDOMAIN"],
    },
    expect: null,
  },
  {
    name: "'..' as a label",
    input: {
      bytes: Buffer.concat([header(0x0100, 1), question([L(".."), L("vm")])]),
      reply: ["NXDOMAIN"],
    },
    expect: null,
  },
  {
    name: "a label with NUL, ESC and newline",
    input: {
      bytes: Buffer.concat([header(0x0100, 1), question([L("d\0e\x1b\n"), L("vm")])]),
      reply: ["NXDOMAIN"],
    },
    expect: null,
  },
  {
    name: "a name of 255 characters (over the limit)",
    input: {
      bytes: query(`${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(60)}.vm`),
      reply: null,
    },
    expect: null,
  },
  {
    name: "class CHAOS",
    input: {
      bytes: Buffer.concat([header(0x0100, 1), question([L("dev"), L("vm")], 1, 3)]),
      reply: ["REFUSED"],
    },
    expect: null,
  },
  {
    name: "class ANY",
    input: {
      bytes: Buffer.concat([header(0x0100, 1), question([L("dev"), L("vm")], 1, 255)]),
      reply: ["REFUSED"],
    },
    expect: null,
  },
  {
    name: "type ANY",
    input: { bytes: query("dev.vm", {}, "ANY"), reply: ["NOERROR"] },
    expect: null,
  },
  {
    name: "type AXFR",
    input: { bytes: query("dev.vm", {}, "AXFR"), reply: ["REFUSED"] },
    expect: null,
  },
  {
    name: "type IXFR",
    input: {
      bytes: Buffer.concat([header(0x0100, 1), question([L("vm")], 251)]),
      reply: ["REFUSED"],
    },
    expect: null,
  },
  { name: "outside .vm", input: { bytes: query("example.com"), reply: ["REFUSED"] }, expect: null },
  { name: "the bare vm zone", input: { bytes: query("vm"), reply: ["REFUSED"] }, expect: null },
  {
    name: "huge EDNS option (over 512 bytes)",
    input: {
      bytes: query("dev.vm", {
        additionals: [
          {
            type: "OPT",
            name: ".",
            udpPayloadSize: 65535,
            options: [{ code: 65001, data: Buffer.alloc(1000, 7) }],
          } as unknown as dnsPacket.Answer,
        ],
      }),
      reply: null,
    },
    expect: null,
  },
  {
    name: "two OPT records",
    input: {
      bytes: Buffer.concat([header(0x0100, 1, 0, 0, 2), question([L("dev"), L("vm")])]),
      reply: ["FORMERR"],
    },
    expect: null,
  },
  {
    name: "a small EDNS query is a proper query",
    input: {
      bytes: query("dev.vm", {
        additionals: [
          { type: "OPT", name: ".", udpPayloadSize: 1232 } as unknown as dnsPacket.Answer,
        ],
      }),
      reply: ["NOERROR"],
    },
    expect: null,
  },
  { name: "an unknown VM", input: { bytes: query("ghost.vm"), reply: ["NXDOMAIN"] }, expect: null },
  {
    name: "an upper-case VM name",
    input: { bytes: query("DEV.VM"), reply: ["NOERROR"] },
    expect: null,
  },
];

/** Asks for dev.vm (id 31337) and waits for that answer; returns the other replies seen meanwhile. */
async function goodQueryAnswered(): Promise<Buffer[]> {
  const strays: Buffer[] = [];
  const answer = await new Promise<Buffer | null>((resolve) => {
    const onMessage = (m: Buffer) => {
      if (m.length >= 2 && m.readUInt16BE(0) === 31337) {
        clearTimeout(timer);
        client.off("message", onMessage);
        resolve(m);
      } else strays.push(m);
    };
    const timer = setTimeout(() => {
      client.off("message", onMessage);
      resolve(null);
    }, 5_000);
    client.on("message", onMessage);
    client.send(query("dev.vm", { id: 31337 }), port, "127.0.0.1");
  });
  assert.ok(answer, "the responder no longer answers a good query");
  assert.deepEqual(
    dnsPacket.decode(answer).answers?.map((a) => (a as { data: unknown }).data),
    ["172.30.0.2"],
  );
  return strays;
}

test(`hostile DNS packets (${rows.length} rows): no answer or a proper error, and the responder still answers`, async () => {
  // The harness's leftover snapshot is host-wide (temp dirs, links), and a packet touches none of
  // it: rows run here without it, so other tests running in parallel cannot fail this one.
  for (const row of rows) {
    const { bytes, reply: allowed } = row.input;
    // Generous when an answer is due (the machine may be busy booting VMs); a silent row waits
    // half a second, and any late reply would still fail the good query's id check below.
    const reply = await exchange(bytes, allowed === null ? 500 : 5_000);
    if (allowed === null) {
      assert.equal(reply, null, `${row.name}: answered ${reply?.toString("hex")}`);
    } else {
      assert.ok(reply, `${row.name}: no answer, expected ${allowed.join("/")}`);
      assert.ok(reply.readUInt16BE(2) & 0x8000, `${row.name}: the reply is not a response`);
      assert.ok(
        allowed.map((r) => RCODES[r]).includes(rcodeOf(reply)),
        `${row.name}: rcode ${rcodeOf(reply)}, expected ${allowed.join("/")}`,
      );
      // No amplification: at most one A record more than the query (never twice its size).
      assert.ok(
        reply.length <= 2 * bytes.length,
        `${row.name}: ${reply.length} bytes for ${bytes.length}`,
      );
    }
    const late = await goodQueryAnswered();
    if (allowed === null) assert.deepEqual(late, [], `${row.name}: answered late`);
  }
});

test("a flood of 5000 packets (responses, garbage, queries) leaves the responder answering", async () => {
  const kinds = [response, selfPointer, Buffer.alloc(3), query("dev.vm")];
  for (let i = 0; i < 5000; i += 100) {
    await Promise.all(
      Array.from(
        { length: 100 },
        (_, j) =>
          new Promise<void>((resolve) =>
            client.send(kinds[(i + j) % kinds.length]!, port, "127.0.0.1", () => resolve()),
          ),
      ),
    );
  }
  const replies = await drain(1_000);
  // Only the 1250 good queries may be answered (some may be dropped by the kernel under load).
  assert.ok(replies <= 1250, `${replies} replies to 1250 queries`);
  await goodQueryAnswered();
});
