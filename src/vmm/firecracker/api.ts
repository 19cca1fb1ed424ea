import http from "node:http";
import { BangerError, ErrorCode, type ErrorCodeValue } from "../../api/errors.js";

export interface FirecrackerRequest {
  method: "PUT" | "PATCH" | "GET";
  path: string;
  body?: Record<string, unknown>;
}

/** The longest one API call may take (a healthy Firecracker answers at once). */
export const API_CALL_MS = 10_000;

/** One HTTP request over Firecracker's API socket. */
export function apiRequest(
  socketPath: string,
  req: FirecrackerRequest,
  timeoutMs = API_CALL_MS,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const payload = req.body ? JSON.stringify(req.body) : undefined;
    const r = http.request(
      {
        socketPath,
        // A connection per call: Node's pooled keep-alive one would outlive a Firecracker that
        // exited, and reach the next one on the same socket path as a dead connection (EPIPE).
        agent: false,
        method: req.method,
        path: req.path,
        headers: {
          accept: "application/json",
          ...(payload
            ? { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }
            : {}),
        },
        // Node reads a timeout of 0 as "wait forever".
        timeout: Math.max(1, timeoutMs),
      },
      (res) => {
        let body = "";
        res.on("data", (c: Buffer) => {
          // Firecracker's answers are a few hundred bytes; more is not an answer worth keeping.
          if (body.length < 64 * 1024) body += c.toString();
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    r.on("timeout", () => r.destroy(new Error(`${req.method} ${req.path} timed out`)));
    r.on("error", reject);
    r.end(payload);
  });
}

/**
 * One API call that must succeed: a refusal (HTTP >= 300) or no answer throws a BangerError
 * with `code`, naming the call and Firecracker's own reason. Resolves with the answer's body.
 */
export async function callApi(
  socketPath: string,
  req: FirecrackerRequest,
  opts: { timeoutMs?: number; code?: ErrorCodeValue; hint?: string } = {},
): Promise<string> {
  const code = opts.code ?? ErrorCode.Internal;
  const res = await apiRequest(socketPath, req, opts.timeoutMs ?? API_CALL_MS).catch(
    (err: unknown) => {
      throw new BangerError(
        code,
        `firecracker did not answer ${req.method} ${req.path}: ${(err as Error).message}`,
        opts.hint,
      );
    },
  );
  if (res.status >= 300)
    throw new BangerError(
      code,
      `firecracker refused ${req.method} ${req.path} (HTTP ${res.status}): ${res.body.slice(0, 300)}`,
      opts.hint,
    );
  return res.body;
}
