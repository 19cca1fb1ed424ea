import { BangerError, ErrorCode } from "../../api/errors.js";

/** The abort reason when a registry goes quiet for longer than the client's idle timeout. */
export class RegistryTimeout extends Error {
  readonly code = "BANGER_REGISTRY_TIMEOUT";
  constructor(readonly timeoutMs: number) {
    super(`no answer for ${timeoutMs} ms`);
  }
}

export interface FailureContext {
  /** host[:port] the request went to: the registry, its token service or a blob storage host. */
  host: string;
  /** host[:port] of the image's registry, as in the reference. */
  registry: string;
  /** True when the registry is spoken to over plain HTTP (localhost, or --insecure-registry). */
  plainHttp: boolean;
  /** True for localhost/127.x registries. */
  local: boolean;
  /** What was being done, for the message, e.g. "while downloading blob sha256:...". */
  during?: string;
}

const TIMEOUTS = new Set([
  "BANGER_REGISTRY_TIMEOUT",
  "ETIMEDOUT",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
]);
const CLOSED = new Set(["ECONNRESET", "EPIPE", "UND_ERR_SOCKET", "UND_ERR_CLOSED"]);
const NO_ROUTE = new Set(["EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "ENETDOWN"]);
const CERT_EXPIRED = new Set(["CERT_HAS_EXPIRED", "CERT_NOT_YET_VALID"]);
const CERT_UNTRUSTED = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_UNTRUSTED",
  "CERT_SIGNATURE_FAILURE",
  "CERT_REVOKED",
  "INVALID_CA",
]);

interface Cause {
  code?: unknown;
  message?: unknown;
  hostname?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/** The innermost error with a string code (fetch wraps system errors in `cause`, happy eyeballs in `errors`). */
function rootCause(err: unknown): { code: string | null; message: string; hostname?: string } {
  let fallback = err instanceof Error ? err.message : String(err);
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current && typeof current === "object"; depth++) {
    const c = current as Cause;
    if (typeof c.message === "string" && c.message) fallback = c.message;
    if (typeof c.code === "string") {
      return {
        code: c.code,
        message: fallback,
        ...(typeof c.hostname === "string" ? { hostname: c.hostname } : {}),
      };
    }
    current = c.cause ?? (Array.isArray(c.errors) ? c.errors[0] : undefined);
  }
  return { code: null, message: fallback };
}

const hostnameOf = (host: string) => host.replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");

/**
 * A network failure as a BangerError that names the host and says what to do.
 * `err` is what fetch (or reading its body) threw; BangerErrors pass through.
 */
export function explainNetworkFailure(err: unknown, ctx: FailureContext): BangerError {
  if (err instanceof BangerError) return err;
  const { code, message, hostname } = rootCause(err);
  const who =
    ctx.host === ctx.registry
      ? `registry ${ctx.host}`
      : `${ctx.host} (used by registry ${ctx.registry})`;
  const during = ctx.during ? ` ${ctx.during}` : "";
  const fail = (what: string, hint: string) =>
    new BangerError(ErrorCode.Precondition, `${what}${during}`, hint);
  const insecureHint =
    ctx.plainHttp || ctx.local
      ? ""
      : `; if ${ctx.registry} speaks plain HTTP, pass --insecure-registry`;

  if (err instanceof RegistryTimeout || (code && TIMEOUTS.has(code))) {
    const seconds = err instanceof RegistryTimeout ? ` for ${err.timeoutMs / 1000} s` : "";
    return fail(
      `${who} stopped answering${seconds}`,
      ctx.local
        ? "is the registry running and healthy? then try again"
        : "check your network (a firewall or proxy may be dropping the connection) and try again",
    );
  }
  if (code === "ENOTFOUND") {
    return fail(
      `cannot resolve the host name ${hostname ?? hostnameOf(ctx.host)} of ${who}`,
      "check the registry part of the reference (e.g. ghcr.io/org/image:tag) and your DNS settings",
    );
  }
  if (code === "EAI_AGAIN") {
    return fail(
      `DNS did not answer for ${hostname ?? hostnameOf(ctx.host)} of ${who}`,
      "check your network connection and DNS, then try again",
    );
  }
  if (code === "ECONNREFUSED") {
    return fail(
      `${who} refused the connection`,
      ctx.local
        ? "is the registry running? check the port in the reference"
        : "check the host and port in the reference",
    );
  }
  if (code && NO_ROUTE.has(code)) {
    return fail(`no network route to ${who} (${code})`, "check your network connection");
  }
  if (code && CERT_EXPIRED.has(code)) {
    return fail(
      `${who} presented a TLS certificate that is expired or not yet valid (${code})`,
      "check this machine's clock; otherwise the registry's operator must renew the certificate",
    );
  }
  if (code === "ERR_TLS_CERT_ALTNAME_INVALID") {
    return fail(
      `${who} presented a TLS certificate issued for another name (${message})`,
      "use the host name the certificate was issued for in the reference",
    );
  }
  if (code && CERT_UNTRUSTED.has(code)) {
    return fail(
      `${who} presented a TLS certificate this machine does not trust (${code})`,
      "for a registry with a private CA, restart the daemon with its certificate: " +
        "'banger daemon stop', then run the command again with NODE_EXTRA_CA_CERTS=/path/to/ca.pem" +
        insecureHint,
    );
  }
  if (code && (code.startsWith("ERR_SSL_") || code === "EPROTO")) {
    return fail(
      `TLS handshake with ${who} failed (${code})`,
      insecureHint
        ? `if ${ctx.registry} speaks plain HTTP, pass --insecure-registry`
        : "check the host and port in the reference",
    );
  }
  if (code && CLOSED.has(code)) {
    return fail(`${who} closed the connection unexpectedly (${code})`, `try again${insecureHint}`);
  }
  if (message === "bad port") {
    return fail(
      `cannot reach ${who}: Node's fetch refuses this port`,
      "run the registry on another port, e.g. 5000",
    );
  }
  return fail(
    `cannot reach ${who}: ${code ?? message}`,
    ctx.local ? "is the registry running?" : `check the name and your network${insecureHint}`,
  );
}
