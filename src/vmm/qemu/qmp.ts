import net from "node:net";
import { BangerError, ErrorCode } from "../../api/errors.js";

type Json = Record<string, unknown>;

/**
 * A minimal QMP client: connect to the unix socket, read the greeting, enter
 * command mode, run one command, close. Every step is bounded in time.
 */
export async function qmpExecute(
  socketPath: string,
  command: string,
  args?: Json,
  timeoutMs = 5_000,
): Promise<Json> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(socketPath);
    let buffer = "";
    let stage: "greeting" | "capabilities" | "command" = "greeting";
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new BangerError(ErrorCode.Internal, `QMP ${command} on ${socketPath} timed out`));
    }, timeoutMs);
    const finish = (err: Error | null, value?: Json) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(value ?? {});
    };
    socket.on("error", (err) =>
      finish(new BangerError(ErrorCode.Internal, `QMP socket ${socketPath}: ${err.message}`)),
    );
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      let newline: number;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Json;
        if ("event" in msg) continue; // asynchronous events are not answers
        if (stage === "greeting" && "QMP" in msg) {
          stage = "capabilities";
          socket.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
        } else if (stage === "capabilities" && ("return" in msg || "error" in msg)) {
          stage = "command";
          socket.write(
            `${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`,
          );
        } else if (stage === "command") {
          if ("error" in msg) {
            const e = msg.error as { desc?: string };
            finish(
              new BangerError(
                ErrorCode.Internal,
                `QMP ${command} failed: ${e.desc ?? JSON.stringify(e)}`,
              ),
            );
          } else if ("return" in msg) {
            finish(null, (msg.return ?? {}) as Json);
          }
        }
      }
    });
  });
}
