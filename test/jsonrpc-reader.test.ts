// The CLI's side of the capped reader: a peer posing as the daemon cannot make the CLI buffer a
// huge answer or wait forever, and an answer for no request (a refusal) reaches the user.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { connectSocket, wrapSocket } from "../src/cli/client.js";

let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-rpcreader-"));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** A fake daemon that answers every connection's first bytes with `reply`. */
async function fakeDaemon(name: string, reply: string): Promise<{ file: string; close(): void }> {
  const file = path.join(dir, name);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on("error", () => {});
    s.once("data", () => s.write(reply));
  });
  await new Promise<void>((resolve) => server.listen(file, resolve));
  return {
    file,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

test(
  "an answer declaring 300 GB is refused by its header, not buffered",
  { timeout: 10_000 },
  async () => {
    const fake = await fakeDaemon(
      "huge.sock",
      `Content-Length: ${300 * 1000 ** 3}\r\n\r\n{"jsonrpc"`,
    );
    try {
      const client = wrapSocket(await connectSocket(fake.file));
      // The fake never closes: a reader that buffered the declared body would wait forever
      // (the test's timeout), so the rejection itself says the header was refused.
      await assert.rejects(client.call("daemon.ping", {}), /lost the connection to bangerd/);
      client.close();
    } finally {
      fake.close();
    }
  },
);

test(
  "an error for no request (the daemon refusing us) is what the call fails with",
  { timeout: 10_000 },
  async () => {
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: null,
      error: { code: -32006, message: "too many connections (256 open, the limit)" },
    });
    const fake = await fakeDaemon("busy.sock", `Content-Length: ${body.length}\r\n\r\n${body}`);
    try {
      const socket = await connectSocket(fake.file);
      const client = wrapSocket(socket);
      const call = client.call("daemon.ping", {});
      // The refusal arrives; then the fake closes the connection, as the daemon does.
      setTimeout(() => fake.close(), 200);
      await assert.rejects(call, /bangerd: too many connections/);
      client.close();
    } finally {
      fake.close();
    }
  },
);
