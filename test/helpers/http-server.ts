import http from "node:http";
import type { AddressInfo } from "node:net";

export interface Route {
  status?: number;
  body: Buffer | string;
  headers?: Record<string, string>;
  /** Send only this many bytes of the body, then cut the connection (a truncated download). */
  truncateAt?: number;
  /** Send the body this many times over (an endless-looking download), stopping when the client goes. */
  repeat?: number;
  /** Send the headers and this many bytes of the body, then go quiet with the connection open. */
  stallAt?: number;
  /** Accept the request and never answer it. */
  noAnswer?: boolean;
}

export interface TestServer {
  url: string;
  routes: Map<string, Route>;
  /** URLs whose response was sent to its end, in order. */
  completed: string[];
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1 with a random port, serving fixed routes. */
export async function startServer(): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const completed: string[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? "";
    const route = routes.get(url);
    if (!route) {
      res.writeHead(404).end("not found");
      return;
    }
    if (route.noAnswer) return;
    const body = Buffer.from(route.body);
    const repeat = route.repeat ?? 1;
    res.writeHead(route.status ?? 200, {
      "content-length": String(body.length * repeat),
      ...route.headers,
    });
    if (route.truncateAt !== undefined) {
      res.write(body.subarray(0, route.truncateAt), () => res.destroy());
      return;
    }
    if (route.stallAt !== undefined) {
      res.write(body.subarray(0, route.stallAt));
      return;
    }
    let sent = 0;
    const next = (): void => {
      // write() returning false means the client is not reading: wait for it, or for it to go.
      while (sent < repeat && !res.destroyed) {
        sent++;
        if (!res.write(body)) {
          res.once("drain", next);
          return;
        }
      }
      if (!res.destroyed) res.end(() => completed.push(url));
    };
    next();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    routes,
    completed,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
