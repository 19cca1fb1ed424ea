import http from "node:http";
import type { AddressInfo } from "node:net";

export interface Route {
  status?: number;
  body: Buffer | string;
  /** Send only this many bytes of the body, then cut the connection (a truncated download). */
  truncateAt?: number;
}

export interface TestServer {
  url: string;
  routes: Map<string, Route>;
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1 with a random port, serving fixed routes. */
export async function startServer(): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const server = http.createServer((req, res) => {
    const route = routes.get(req.url ?? "");
    if (!route) {
      res.writeHead(404).end("not found");
      return;
    }
    const body = Buffer.from(route.body);
    res.writeHead(route.status ?? 200, { "content-length": String(body.length) });
    if (route.truncateAt !== undefined) {
      res.write(body.subarray(0, route.truncateAt), () => res.destroy());
      return;
    }
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    routes,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
