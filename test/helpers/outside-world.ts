// A test-made "outside world" (no internet in tests): a network namespace reached over a
// veth pair, with a TCP server in it that answers "outside" to anything. Needs root.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { promisify } from "node:util";

const run = promisify(execFile);

export interface OutsideWorld {
  /** The server's address and port, as a guest would dial them. */
  address: string;
  port: number;
  close(): Promise<void>;
}

/** Builds the namespace; `close` removes it, the veth and the server. A /30 of 198.51.100.0/24 (TEST-NET-2). */
export async function outsideWorld(): Promise<OutsideWorld> {
  const tag = randomBytes(2).toString("hex");
  const ns = `banger-ow-${tag}`;
  const host = `bangerow${tag}`;
  const peer = `bangerop${tag}`;
  const octet = 4 * (1 + (parseInt(tag, 16) % 60)); // .4 .. .240: two parallel runs rarely share one
  const hostAddr = `198.51.100.${octet + 1}`;
  const address = `198.51.100.${octet + 2}`;
  const port = 8080;
  let server: ChildProcess | null = null;
  const close = async () => {
    server?.kill("SIGKILL");
    await run("ip", ["link", "del", host]).catch(() => undefined);
    await run("ip", ["netns", "del", ns]).catch(() => undefined);
  };
  try {
    await run("ip", ["netns", "add", ns]);
    await run("ip", ["link", "add", host, "type", "veth", "peer", "name", peer]);
    await run("ip", ["link", "set", peer, "netns", ns]);
    await run("ip", ["addr", "add", `${hostAddr}/30`, "dev", host]);
    await run("ip", ["link", "set", host, "up"]);
    await run("ip", ["-n", ns, "addr", "add", `${address}/30`, "dev", peer]);
    await run("ip", ["-n", ns, "link", "set", peer, "up"]);
    await run("ip", ["-n", ns, "link", "set", "lo", "up"]);
    await run("ip", ["-n", ns, "route", "add", "default", "via", hostAddr]);
    const script = `require("net").createServer(c=>{c.on("error",()=>{});c.end("outside\\n")}).listen(${port},"${address}",()=>console.log("up"))`;
    server = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", script], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error("outside-world server did not start")),
        10_000,
      );
      server!.stdout!.once("data", () => {
        clearTimeout(timer);
        resolve();
      });
      server!.once("exit", () => reject(new Error("outside-world server exited")));
    });
    return { address, port, close };
  } catch (err) {
    await close();
    throw err;
  }
}
