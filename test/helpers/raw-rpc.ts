import net from "node:net";
import {
  createMessageConnection,
  SocketMessageReader,
  SocketMessageWriter,
} from "vscode-jsonrpc/node.js";

/**
 * One JSON-RPC request on a unix socket, bypassing banger's typed clients (as a hostile local
 * user's own code would). A JSON-RPC error rejects with vscode-jsonrpc's ResponseError.
 */
export async function rawRequest(
  socket: string,
  method: string,
  params: unknown,
): Promise<unknown> {
  const sock = net.createConnection(socket);
  await new Promise((resolve, reject) => sock.once("connect", resolve).once("error", reject));
  const conn = createMessageConnection(
    new SocketMessageReader(sock),
    new SocketMessageWriter(sock),
  );
  conn.listen();
  try {
    return await conn.sendRequest(method, params);
  } finally {
    conn.dispose();
    sock.destroy();
  }
}

export interface Answer {
  id?: unknown;
  result?: unknown;
  error?: { code: number; message: string };
}

export interface Exchange {
  answers: Answer[];
  /** The daemon closed the connection. */
  closed: boolean;
}

/** Splits Content-Length framed answers out of what a server sent. */
export function parseAnswers(buf: Buffer): Answer[] {
  const out: Answer[] = [];
  let rest = buf;
  for (;;) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) break;
    const m = /content-length:\s*(\d+)/i.exec(rest.subarray(0, end).toString("latin1"));
    if (!m) break;
    const len = Number(m[1]);
    const body = rest.subarray(end + 4, end + 4 + len);
    if (body.length < len) break;
    out.push(JSON.parse(body.toString("utf8")) as Answer);
    rest = rest.subarray(end + 4 + len);
  }
  return out;
}

/**
 * Connects to `socketPath`, writes each chunk in turn, and collects answers until `want` have
 * arrived, the server closes, or `waitMs` passes.
 */
export function rawExchange(
  socketPath: string,
  chunks: Array<string | Buffer>,
  want: number,
  waitMs = 5000,
  halfClose = false,
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = net.createConnection({
      path: socketPath,
      allowHalfOpen: true,
    });
    let got = Buffer.alloc(0);
    let closed = false;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ answers: parseAnswers(got), closed });
    };
    const timer = setTimeout(finish, waitMs);
    socket.on("data", (d) => {
      got = Buffer.concat([got, d]);
      // Enough answers: give the daemon a moment to close the connection, if it is going to.
      if (parseAnswers(got).length >= want) setTimeout(finish, 300);
    });
    // The daemon's end of the stream: with allowHalfOpen, 'close' waits for ours.
    socket.on("end", () => {
      closed = true;
      setTimeout(finish, 50);
    });
    socket.on("close", () => {
      closed = true;
      finish();
    });
    socket.on("error", () => {});
    socket.on("connect", async () => {
      for (const c of chunks) {
        if (socket.destroyed) return;
        socket.write(c);
        if (chunks.length > 1) await new Promise((r) => setTimeout(r, 2));
      }
      if (halfClose && !socket.destroyed) socket.end();
    });
  });
}

export const frame = (body: string | Buffer): Buffer => {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return Buffer.concat([Buffer.from(`Content-Length: ${b.length}\r\n\r\n`), b]);
};
