import net from "node:net";
import { BangerError, ErrorCode } from "../../api/errors.js";

/**
 * The guest's vsock port its identity reader listens on after a restore. Below 1024, so only
 * root in the guest (CAP_NET_BIND_SERVICE) can listen on it: no guest user can stand in for it.
 */
export const IDENTITY_VSOCK_PORT = 520;

/** Firecracker answers a CONNECT with one short line ("OK <host port>"); longer is not it. */
const MAX_HANDSHAKE_BYTES = 64;
/** Between tries while nothing in the guest listens yet (Firecracker closes at once then). */
const RETRY_MS = 100;

/** The guest did not accept: Firecracker closed the connection (or is not listening yet). */
class NotAccepted extends Error {}

/**
 * A stream to a guest's vsock port through Firecracker's unix socket (`uds_path` of PUT
 * /vsock): connect, send `CONNECT <port>`, and take Firecracker's `OK <host port>` line; what
 * follows is the guest's stream, bytes that came with the line included. Retries, bounded by
 * `timeoutMs`, while the guest is not listening yet.
 */
export async function connectVsock(
  udsPath: string,
  port: number,
  timeoutMs: number,
): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  let why = "";
  for (;;) {
    const left = deadline - Date.now();
    if (left <= 0)
      throw new BangerError(
        ErrorCode.Internal,
        `nothing in the guest accepted vsock port ${port} within ${Math.round(timeoutMs / 1000)} s (${why || "no answer"})`,
        "the guest's identity reader is not running (see docs/internals/architecture.md, VMM drivers)",
      );
    try {
      return await handshake(udsPath, port, left);
    } catch (err) {
      if (!(err instanceof NotAccepted)) throw err;
      why = err.message;
      await new Promise((r) =>
        setTimeout(r, Math.min(RETRY_MS, Math.max(0, deadline - Date.now()))),
      );
    }
  }
}

function handshake(udsPath: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(udsPath);
    let got = Buffer.alloc(0);
    let settled = false;
    const finish = (err: Error | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off("readable", onReadable);
      socket.off("connect", onConnect);
      socket.off("error", onError);
      socket.off("close", onClose);
      if (err) {
        socket.destroy();
        reject(err);
      } else resolve(socket);
    };
    const timer = setTimeout(
      () =>
        finish(
          new BangerError(
            ErrorCode.Internal,
            `firecracker did not answer CONNECT ${port} on ${udsPath} in time`,
          ),
        ),
      Math.max(1, timeoutMs),
    );
    // Read with 'readable', not 'data': once that listener goes the socket is neither flowing
    // nor paused, so the caller's own 'data' listener starts it and no byte is lost between.
    const onReadable = () => {
      for (let chunk: Buffer | null; !settled && (chunk = socket.read() as Buffer | null);)
        take(chunk);
    };
    const take = (chunk: Buffer) => {
      got = Buffer.concat([got, chunk]);
      const end = got.indexOf(0x0a);
      if (end < 0) {
        if (got.length > MAX_HANDSHAKE_BYTES)
          finish(
            new BangerError(
              ErrorCode.Internal,
              `firecracker's vsock answered past ${MAX_HANDSHAKE_BYTES} bytes without a line`,
            ),
          );
        return;
      }
      const line = got.subarray(0, end).toString("latin1");
      if (!/^OK \d{1,10}$/.test(line)) {
        finish(
          new BangerError(
            ErrorCode.Internal,
            `firecracker's vsock answered ${JSON.stringify(line.slice(0, MAX_HANDSHAKE_BYTES))} to CONNECT ${port}`,
          ),
        );
        return;
      }
      // The guest's first bytes may have come with the line: they are the caller's.
      const rest = got.subarray(end + 1);
      if (rest.length > 0) socket.unshift(rest);
      finish(null);
    };
    const onConnect = () => socket.write(`CONNECT ${port}\n`);
    // Refused or reset: Firecracker is not listening yet, or no guest listener took the port.
    const onError = (err: NodeJS.ErrnoException) =>
      finish(
        ["ECONNREFUSED", "ENOENT", "ECONNRESET", "EPIPE"].includes(err.code ?? "")
          ? new NotAccepted(`${udsPath}: ${err.code}`)
          : err,
      );
    const onClose = () => finish(new NotAccepted("firecracker closed the connection"));
    socket.on("readable", onReadable);
    socket.on("connect", onConnect);
    socket.on("error", onError);
    socket.on("close", onClose);
  });
}
