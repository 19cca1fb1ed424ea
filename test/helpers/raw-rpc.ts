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
