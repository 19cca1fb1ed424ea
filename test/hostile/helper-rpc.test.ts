// Hostile banger-helper RPCs against a real HelperServer running the real root operations, pinned
// to its own bridge and subnet, over a recording runner: the helper's user tries to take host-wide
// network control. Every row must be refused clearly, before any command that changes the host
// runs, and the helper must keep answering.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { ResponseError } from "vscode-jsonrpc/node.js";
import { HelperClient } from "../../src/net/helper-client.js";
import { HelperServer, MAX_HELPER_CONNECTIONS } from "../../src/net/helper-server.js";
import { makePin } from "../../src/net/pin.js";
import { createRootOps } from "../../src/net/privileged.js";
import type { CommandResult, CommandRunner } from "../../src/system/runner.js";
import { frame, parseAnswers, rawExchange, rawRequest as rawJsonRpc } from "../helpers/raw-rpc.js";
import { assertClearError, type HostileRow } from "./harness.js";

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
const OTHER_UID = uid + 4242;
const pin = makePin("banger-h", "172.31.88.0/24");

/** Answers the read-only questions the root ops ask; records every command. */
class RecordingRunner implements CommandRunner {
  calls: string[] = [];
  async which(cmd: string): Promise<string | null> {
    return `/usr/sbin/${cmd}`;
  }
  async run(cmd: string, args: string[]): Promise<CommandResult> {
    const line = [cmd, ...args].join(" ");
    this.calls.push(line);
    const ok = (stdout = ""): CommandResult => ({ code: 0, signal: null, stdout, stderr: "" });
    if (line === "ip tuntap show")
      return ok(
        `bg-theirs: tap persist user ${OTHER_UID}\nbg-elsewhere: tap persist user ${uid}\nbg-mine: tap persist user ${uid}\n`,
      );
    if (line === "ip link show dev bg-theirs")
      return ok("7: bg-theirs: <BROADCAST> mtu 1500 master banger-h state DOWN\n");
    if (line === "ip link show dev bg-elsewhere")
      return ok("8: bg-elsewhere: <BROADCAST> mtu 1500 master banger-other state DOWN\n");
    if (line === "ip link show dev banger-h") return ok("5: banger-h: <BROADCAST> mtu 1500\n");
    // Recorded only: the pinned NAT below must reach them, nothing refused may.
    if (cmd === "nft" || cmd === "sysctl") return ok();
    return { code: 1, signal: null, stdout: "", stderr: "not here" };
  }
  /** Commands that would change the host: anything but these questions. */
  mutations(): string[] {
    return this.calls.filter(
      (c) =>
        !/^(ip tuntap show|ip link show dev \S+|ip -o link show master \S+|resolvectl status)$/.test(
          c,
        ),
    );
  }
}

const STALL_MS = 1500;
let dir: string;
let socket: string;
let runner: RecordingRunner;
let server: HelperServer;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-hostile-helper-"));
  socket = path.join(dir, "helper.sock");
  runner = new RecordingRunner();
  server = await HelperServer.start({
    socketPath: socket,
    ops: createRootOps(runner, { pin, onlyForUid: uid }),
    uid,
    gid,
    pin,
    log: { info: () => {}, error: () => {} },
    stallTimeoutMs: STALL_MS,
  });
});

after(async () => {
  await server.close();
  await fs.rm(dir, { recursive: true, force: true });
});

/** One raw JSON-RPC request, bypassing the typed client (a hostile user's own code would). */
async function rawRequest(method: string, params: unknown): Promise<unknown> {
  try {
    return await rawJsonRpc(socket, method, params);
  } catch (err) {
    if (err instanceof ResponseError) {
      const hint = (err.data as { hint?: string } | undefined)?.hint;
      throw Object.assign(new Error(err.message), { code: err.code, hint });
    }
    throw err;
  }
}

interface Call {
  method: string;
  params: unknown;
}

const SERVES = /this helper serves only bridge banger-h with subnet 172\.31\.88\.0\/24/;
const NOT_OURS = /not one of banger's devices/;
const BAD_CIDR = /not an IPv4 CIDR/;
const ZOD = /banger-helper refused: .*(expected|Too (big|small)|Unrecognized key)/s;
const UNKNOWN = /banger-helper does not do ".*"; it serves only: ping, ensureBridge/;

const bridge = (name: unknown, gatewayCidr: unknown = "172.31.88.1/24"): Call => ({
  method: "ensureBridge",
  params: { name, gatewayCidr },
});
const gw = (gatewayCidr: unknown): Call => bridge("banger-h", gatewayCidr);
const tap = (name: unknown, onto: unknown = "banger-h", ownerUid: unknown = uid): Call => ({
  method: "createTap",
  params: { name, bridge: onto, ownerUid },
});
const nat = (subnet: unknown, onto: unknown = "banger-h"): Call => ({
  method: "ensureNat",
  params: { subnet, bridge: onto },
});
const call = (method: string, params: unknown): Call => ({ method, params });

const rows: Array<HostileRow<Call>> = [
  // A bridge address that routes real networks, or another bridge.
  { name: "gateway 8.8.8.8/1 (half the internet)", input: gw("8.8.8.8/1"), expect: SERVES },
  { name: "gateway 0.0.0.0/0", input: gw("0.0.0.0/0"), expect: SERVES },
  { name: "gateway 255.255.255.255/32", input: gw("255.255.255.255/32"), expect: SERVES },
  { name: "gateway in the subnet with /16", input: gw("172.31.88.1/16"), expect: SERVES },
  { name: "another host of the subnet", input: gw("172.31.88.9/24"), expect: SERVES },
  { name: "gateway 10.0.0.1/8", input: gw("10.0.0.1/8"), expect: SERVES },
  { name: "gateway with a shell tail", input: gw("172.31.88.1/24; reboot"), expect: BAD_CIDR },
  { name: "gateway as a number", input: gw(2887735297), expect: ZOD },
  { name: "gateway missing", input: call("ensureBridge", { name: "banger-h" }), expect: ZOD },
  { name: "another user's bridge", input: bridge("banger-other"), expect: SERVES },
  { name: "bridge banger.. (dots)", input: bridge("banger.."), expect: SERVES },
  { name: "bridge with a double quote", input: bridge('banger"x'), expect: NOT_OURS },
  { name: "bridge with a newline", input: bridge("banger-h\nx"), expect: NOT_OURS },
  { name: "bridge with ESC", input: bridge("banger\x1b[2J"), expect: NOT_OURS },
  { name: "bridge of 300 characters", input: bridge(`banger${"a".repeat(294)}`), expect: NOT_OURS },
  { name: "bridge with unicode", input: bridge("bangerö"), expect: NOT_OURS },
  { name: "bridge 'banger0; rm -rf /'", input: bridge("banger0; rm -rf /"), expect: NOT_OURS },
  { name: "bridge null", input: bridge(null), expect: ZOD },
  { name: "bridge eth0", input: bridge("eth0"), expect: NOT_OURS },
  // Taps: only the served uid's, only onto the pinned bridge.
  {
    name: "tap onto another bridge",
    input: tap("bg-aaaaaaaaaaaa", "banger-other"),
    expect: SERVES,
  },
  { name: "tap onto eth0", input: tap("bg-aaaaaaaaaaaa", "eth0"), expect: NOT_OURS },
  {
    name: "tap for another uid",
    input: tap("bg-aaaaaaaaaaaa", "banger-h", OTHER_UID),
    expect: /this helper serves uid/,
  },
  { name: "tap owner -1", input: tap("bg-aaaaaaaaaaaa", "banger-h", -1), expect: ZOD },
  { name: "tap owner 1e300", input: tap("bg-aaaaaaaaaaaa", "banger-h", 1e300), expect: ZOD },
  { name: "tap owner 1.5", input: tap("bg-aaaaaaaaaaaa", "banger-h", 1.5), expect: ZOD },
  {
    name: "tap owner as a string",
    input: tap("bg-aaaaaaaaaaaa", "banger-h", String(uid)),
    expect: ZOD,
  },
  { name: "tap named eth0", input: tap("eth0"), expect: NOT_OURS },
  {
    name: "tap named like another user's bridge",
    input: tap("banger-other"),
    expect: /taps are named bg-/,
  },
  { name: "tap replacing another uid's", input: tap("bg-theirs"), expect: /belongs to uid/ },
  {
    name: "tap replacing mine on another bridge",
    input: tap("bg-elsewhere"),
    expect: /it is on bridge banger-other/,
  },
  {
    name: "delete another uid's tap",
    input: call("deleteTap", { name: "bg-theirs" }),
    expect: new RegExp(`belongs to uid ${OTHER_UID}, not ${uid}`),
  },
  {
    name: "delete my tap on another user's bridge",
    input: call("deleteTap", { name: "bg-elsewhere" }),
    expect: /it is on bridge banger-other, and this helper serves only banger-h/,
  },
  {
    name: "delete the bridge as a tap",
    input: call("deleteTap", { name: "banger-h" }),
    expect: /is not a tap/,
  },
  { name: "delete eth0", input: call("deleteTap", { name: "eth0" }), expect: NOT_OURS },
  {
    name: "delete with a 1 MB name",
    input: call("deleteTap", { name: `bg-${"x".repeat(1 << 20)}` }),
    expect: NOT_OURS,
  },
  {
    name: "list another bridge's taps",
    input: call("listTaps", { bridge: "banger-other" }),
    expect: SERVES,
  },
  // NAT: exactly the pinned subnet through the pinned bridge.
  { name: "masquerade 0.0.0.0/0", input: nat("0.0.0.0/0"), expect: SERVES },
  { name: "masquerade 8.0.0.0/8", input: nat("8.0.0.0/8"), expect: SERVES },
  { name: "masquerade a supernet of the pin", input: nat("172.31.88.0/23"), expect: SERVES },
  {
    name: "the pinned subnet through another bridge",
    input: nat("172.31.88.0/24", "banger-other"),
    expect: SERVES,
  },
  {
    name: "nft injection in the subnet",
    input: nat("172.31.88.0/24 } flush ruleset"),
    expect: BAD_CIDR,
  },
  {
    name: "remove another user's NAT",
    input: call("removeNat", { bridge: "banger-other" }),
    expect: SERVES,
  },
  {
    name: "remove NAT of banger*",
    input: call("removeNat", { bridge: "banger*" }),
    expect: NOT_OURS,
  },
  // Resolver routing: the pinned bridge, to the pinned gateway.
  {
    name: "route another bridge's resolver",
    input: call("routeResolver", { bridge: "banger-other", dnsServer: "172.31.88.1" }),
    expect: SERVES,
  },
  {
    name: "route ~vm to 8.8.8.8",
    input: call("routeResolver", { bridge: "banger-h", dnsServer: "8.8.8.8" }),
    expect: SERVES,
  },
  {
    name: "resolver address with a tail",
    input: call("routeResolver", { bridge: "banger-h", dnsServer: "172.31.88.1 extra" }),
    expect: /not an IPv4 address/,
  },
  {
    name: "unroute another user's resolver",
    input: call("unrouteResolver", { bridge: "banger-other" }),
    expect: SERVES,
  },
  // The protocol itself.
  { name: "unknown method runShell", input: call("runShell", { cmd: "id" }), expect: UNKNOWN },
  { name: "method __proto__", input: call("__proto__", {}), expect: UNKNOWN },
  { name: "method constructor", input: call("constructor", {}), expect: UNKNOWN },
  { name: "ping with an extra key", input: call("ping", { x: 1 }), expect: ZOD },
  {
    name: "NAT with an extra key",
    input: call("ensureNat", { subnet: "172.31.88.0/24", bridge: "banger-h", also: "rm -rf /" }),
    expect: ZOD,
  },
  { name: "positional params", input: call("deleteTap", ["bg-mine"]), expect: ZOD },
  { name: "params as a string", input: call("removeNat", "banger-h"), expect: ZOD },
];

test(`hostile helper RPCs (${rows.length} rows): refused, nothing run, the helper still answers`, async () => {
  const client = new HelperClient(socket, { timeoutMs: 10_000 });
  // Not the harness's runTable: its leftover snapshot is host-wide, and what this table guards
  // (no command run) the recording runner shows exactly, without other tests' noise.
  for (const row of rows) {
    runner.calls.length = 0;
    const outcome = await rawRequest(row.input.method, row.input.params).then(
      () => null,
      (err: unknown) => err,
    );
    assert.ok(outcome, `${row.name}: was accepted, expected ${row.expect}`);
    assertClearError(outcome, row.expect ?? /./, row.name);
    assert.deepEqual(runner.mutations(), [], `${row.name}: ran commands that change the host`);
    assert.equal((await client.ping()).pong, true, `${row.name}: the helper stopped answering`);
  }
  // What is pinned still works, through the same ops.
  runner.calls.length = 0;
  await client.ensureNat("172.31.88.0/24", "banger-h");
  assert.ok(
    runner.calls.some((c) => c.startsWith("nft -f -")),
    runner.calls.join("\n"),
  );
});

// The helper reads requests through the daemon's bounded framing: before, it read with
// vscode-jsonrpc's own reader, which buffered whatever Content-Length a caller declared, waited
// forever on a half-sent request, and crashed the root helper on a deeply nested message.
const deep = (n: number) => "[".repeat(n) + "]".repeat(n);
const framingRows: Array<{
  name: string;
  chunks: string[];
  waitMs?: number;
  expect: RegExp;
}> = [
  {
    name: "Content-Length of 300 MB",
    chunks: [`Content-Length: ${300 * 1000 * 1000}\r\n\r\n`, "x".repeat(1024)],
    expect: /^-32600 message of 300000000 bytes is over the limit .* \(closed\)$/,
  },
  {
    name: "a 200k-deep array as the whole message",
    chunks: [frame(deep(200_000)).toString("latin1")],
    expect: /^-32600 Invalid Request: /,
  },
  {
    name: "a 200k-deep array as params",
    chunks: [
      frame(`{"jsonrpc":"2.0","id":1,"method":"deleteTap","params":${deep(200_000)}}`).toString(
        "latin1",
      ),
    ],
    expect: /^-32602 banger-helper refused: /,
  },
  {
    // null is not "no params": the daemon refuses it too (docs/internals/rpc.md).
    name: "params null",
    chunks: [frame('{"jsonrpc":"2.0","id":1,"method":"ping","params":null}').toString("latin1")],
    expect: /^-32602 banger-helper refused: /,
  },
  {
    name: "a body that is not JSON",
    chunks: [frame("{nope").toString("latin1")],
    expect: /^-32700 /,
  },
  {
    name: "a request that stops half-way",
    chunks: ["Content-Length: 100\r\n\r\n{"],
    waitMs: STALL_MS + 4000,
    expect: /^-32600 incomplete message: no data for .* \(closed\)$/,
  },
];

test(`hostile helper framing (${framingRows.length} rows): JSON-RPC's answer, and the helper still answers`, async () => {
  const client = new HelperClient(socket, { timeoutMs: 10_000 });
  for (const row of framingRows) {
    runner.calls.length = 0;
    const x = await rawExchange(socket, row.chunks, 1, row.waitMs ?? 5000);
    const first = x.answers[0]?.error;
    const said = first ? `${first.code} ${first.message}` : "no answer";
    assert.match(`${said}${x.closed ? " (closed)" : ""}`, row.expect, row.name);
    assert.deepEqual(runner.mutations(), [], `${row.name}: ran commands that change the host`);
    assert.equal((await client.ping()).pong, true, `${row.name}: the helper stopped answering`);
  }
});

test("a flood of connections to the helper: past its limit one is refused clearly, then all are released", async () => {
  // Each held connection has been answered, so the helper has surely accepted it.
  const held: net.Socket[] = [];
  try {
    for (let i = 0; i < MAX_HELPER_CONNECTIONS; i++) {
      const s = net.createConnection(socket);
      held.push(s);
      s.on("error", () => {});
      const x = await new Promise<Buffer>((resolve) => {
        let got = Buffer.alloc(0);
        const timer = setTimeout(() => resolve(got), 10_000);
        s.on("data", (d) => {
          got = Buffer.concat([got, d]);
          if (parseAnswers(got).length > 0) {
            clearTimeout(timer);
            resolve(got);
          }
        });
        s.on("connect", () =>
          s.write(frame(JSON.stringify({ jsonrpc: "2.0", id: i, method: "ping", params: {} }))),
        );
      });
      assert.equal((parseAnswers(x)[0]?.result as { pong?: boolean })?.pong, true, `held ${i}`);
    }
    const client = new HelperClient(socket, { timeoutMs: 10_000 });
    await assert.rejects(client.ping(), /too many connections to banger-helper/);
  } finally {
    for (const s of held) s.destroy();
  }
  // Released: the next call is served (bounded retries while the helper sees the closes).
  const client = new HelperClient(socket, { timeoutMs: 10_000 });
  let pong = false;
  for (let i = 0; i < 100 && !pong; i++) {
    pong = await client.ping().then(
      (r) => r.pong,
      () => false,
    );
    if (!pong) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(pong, "the helper answers once the flood is gone");
});
