import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { ImageReference } from "./reference.js";
import { explainNetworkFailure, RegistryTimeout } from "./registry-errors.js";

/** The registry client's HTTP: idle deadlines, bounded bodies, the 401 dance and redirects. */

export interface RegistryDeps {
  fetch?: typeof fetch;
  /** Docker's credential file; `auths[<host>]` supplies Basic credentials. */
  dockerConfigFile?: string;
  /** Registries reached over plain HTTP besides localhost ones. */
  insecureRegistries?: string[];
  /** A request fails when the registry sends nothing for this long (connecting, headers, between body chunks). */
  idleTimeoutMs?: number;
}

const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

export type Json = Record<string, unknown>;

export const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function isLocal(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "");
  return (
    host === "localhost" || host === "127.0.0.1" || host === "[::1]" || host.startsWith("127.")
  );
}

/** A JSON object from a body, or a clear error naming what it was meant to be. */
export function parseJson(body: Buffer, what: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    value = undefined;
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${what} is not a JSON object`,
      "the registry served something else; check the reference, or try again",
    );
  }
  return value as Json;
}

export function statusHint(status: number): string | undefined {
  if (status >= 500) return "the registry is failing; try again later";
  if (status === 429)
    return "the registry is rate-limiting you; wait a while, or log in for a higher limit";
  return undefined;
}

/** The Authorization header that answers a 401's WWW-Authenticate header (registry-auth.ts). */
export type Authorize = (ref: ImageReference, wwwAuthenticate: string) => Promise<string>;

export class RegistryTransport {
  private readonly fetchFn: typeof fetch;
  /** Authorization header per registry/repository, from the last challenge answered. */
  private readonly tokens = new Map<string, string>();

  constructor(
    private readonly deps: RegistryDeps,
    private readonly authorize: Authorize,
  ) {
    this.fetchFn = deps.fetch ?? fetch;
  }

  private plainHttp(ref: ImageReference): boolean {
    return isLocal(ref.registry) || (this.deps.insecureRegistries ?? []).includes(ref.registry);
  }

  private base(ref: ImageReference): string {
    return `${this.plainHttp(ref) ? "http" : "https"}://${ref.registry}`;
  }

  /** A network failure talking to `host` (default: the registry) as an error that says what to do. */
  failure(err: unknown, ref: ImageReference, host = ref.registry, during?: string) {
    return explainNetworkFailure(err, {
      host,
      registry: ref.registry,
      plainHttp: this.plainHttp(ref),
      local: isLocal(ref.registry),
      ...(during ? { during } : {}),
    });
  }

  /**
   * fetch under an idle deadline: the request is aborted when the server sends
   * nothing for `idleTimeoutMs` while connecting, before the headers, or
   * between body chunks. A slow but steady download never times out.
   */
  async send(url: string, init: RequestInit, ref: ImageReference): Promise<Response> {
    const ms = this.deps.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new RegistryTimeout(ms)), ms);
    // A body abandoned by cancel() leaves the timer: it must not hold the process, and firing is harmless.
    timer.unref();
    let response: Response;
    try {
      response = await this.fetchFn(url, { ...init, signal: controller.signal });
    } catch (err) {
      clearTimeout(timer);
      throw this.failure(err, ref, new URL(url).host);
    }
    if (!response.body) {
      clearTimeout(timer);
      return response;
    }
    const watched = response.body.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, out) {
          timer.refresh();
          out.enqueue(chunk);
        },
        flush() {
          clearTimeout(timer);
        },
      }),
    );
    return new Response(watched, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  }

  /** A whole small body; reading stops as soon as it runs past `limit` bytes. */
  async readBody(
    response: Response,
    ref: ImageReference,
    limit: number,
    tooLarge: string,
  ): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let total = 0;
    if (!response.body) return Buffer.alloc(0);
    try {
      for await (const chunk of Readable.fromWeb(
        response.body as WebReadableStream<Uint8Array>,
      ) as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > limit) throw new BangerError(ErrorCode.InvalidParams, tooLarge);
        chunks.push(chunk);
      }
    } catch (err) {
      throw this.failure(err, ref, ref.registry, "while reading its answer");
    }
    return Buffer.concat(chunks);
  }

  /** GET with the auth dance: anonymous first, then whatever the 401 challenge asks for. */
  async get(
    ref: ImageReference,
    pathname: string,
    headers: Record<string, string> = {},
  ): Promise<Response> {
    const url = `${this.base(ref)}${pathname}`;
    const scopeKey = `${ref.registry}/${ref.repository}`;
    const authed = (): Record<string, string> => {
      const token = this.tokens.get(scopeKey);
      return token ? { ...headers, authorization: token } : headers;
    };
    let response = await this.send(url, { headers: authed(), redirect: "manual" }, ref);
    if (response.status === 401) {
      const challenge = response.headers.get("www-authenticate") ?? "";
      await response.body?.cancel();
      this.tokens.set(scopeKey, await this.authorize(ref, challenge));
      response = await this.send(url, { headers: authed(), redirect: "manual" }, ref);
    }
    // Blob downloads redirect to storage hosts; they must not receive our credentials.
    for (let hops = 0; hops < 5 && [301, 302, 303, 307, 308].includes(response.status); hops++) {
      const location = response.headers.get("location");
      await response.body?.cancel();
      if (!location) break;
      const next = new URL(location, url);
      const sameHost = next.host === new URL(url).host;
      response = await this.send(
        next.toString(),
        { headers: sameHost ? authed() : headers, redirect: "manual" },
        ref,
      );
    }
    if (response.status === 401 || response.status === 403) {
      await response.body?.cancel();
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry} refused access to ${ref.repository} (HTTP ${response.status})`,
        `check the name, or log in: 'docker login ${ref.registry}' (banger reads ~/.docker/config.json)`,
      );
    }
    return response;
  }
}
