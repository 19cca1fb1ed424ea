import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import type { ImageReference } from "./reference.js";
import { parseJson, type RegistryTransport } from "./registry-transport.js";

/** Registry authentication: WWW-Authenticate challenges, Docker's credential file, Bearer tokens. */

/** Token responses are a few KiB; this only bounds a misbehaving token service. */
const MAX_TOKEN_BYTES = 1024 * 1024;

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** key=value pairs of a WWW-Authenticate challenge (values may be quoted). */
export function parseChallenge(header: string): Challenge {
  const space = header.indexOf(" ");
  const scheme = (space < 0 ? header : header.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  for (const m of header.slice(space + 1).matchAll(/([a-zA-Z_]+)="?([^",]*)"?/g))
    params[m[1]!.toLowerCase()] = m[2]!;
  return { scheme, params };
}

/** `user:pass` for a registry from ~/.docker/config.json (or `file`), if any. */
function credentials(file: string | undefined, registry: string): string | null {
  const configFile = file ?? path.join(os.homedir(), ".docker", "config.json");
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(fs.readFileSync(configFile, "utf8"));
  } catch {
    return null;
  }
  const keys =
    registry === "registry-1.docker.io"
      ? ["https://index.docker.io/v1/", "docker.io", "index.docker.io", registry]
      : [registry, `https://${registry}`, `http://${registry}`];
  for (const key of keys) {
    const entry = config.auths?.[key];
    if (entry?.auth) return Buffer.from(entry.auth, "base64").toString("utf8");
    if (entry?.username && entry.password !== undefined)
      return `${entry.username}:${entry.password}`;
  }
  return null;
}

/** The Authorization header that answers `challenge`: Basic from the credentials, or a Bearer token. */
export async function authorize(
  transport: RegistryTransport,
  ref: ImageReference,
  challenge: Challenge,
  dockerConfigFile: string | undefined,
): Promise<string> {
  const creds = credentials(dockerConfigFile, ref.registry);
  if (challenge.scheme === "basic") {
    if (!creds) {
      throw new BangerError(
        ErrorCode.Precondition,
        `registry ${ref.registry} requires credentials`,
        `run 'docker login ${ref.registry}' or add them to ~/.docker/config.json`,
      );
    }
    return `Basic ${Buffer.from(creds).toString("base64")}`;
  }
  if (challenge.scheme !== "bearer" || !challenge.params.realm) {
    throw new BangerError(
      ErrorCode.Precondition,
      `registry ${ref.registry} asks for an unsupported authentication (${challenge.scheme || "none given"})`,
    );
  }
  const tokenUrl = new URL(challenge.params.realm);
  if (challenge.params.service) tokenUrl.searchParams.set("service", challenge.params.service);
  tokenUrl.searchParams.set("scope", challenge.params.scope ?? `repository:${ref.repository}:pull`);
  const headers: Record<string, string> = creds
    ? { authorization: `Basic ${Buffer.from(creds).toString("base64")}` }
    : {};
  const response = await transport.send(tokenUrl.toString(), { headers }, ref);
  if (!response.ok) {
    await response.body?.cancel();
    throw new BangerError(
      ErrorCode.Precondition,
      `registry ${ref.registry}: the token service refused (HTTP ${response.status})`,
      creds
        ? "check the credentials in ~/.docker/config.json"
        : `the image may be private: 'docker login ${ref.registry}'`,
    );
  }
  const body = parseJson(
    await transport.readBody(
      response,
      ref,
      MAX_TOKEN_BYTES,
      `registry ${ref.registry}: the token service's answer is larger than ${MAX_TOKEN_BYTES} bytes`,
    ),
    `registry ${ref.registry}: the token service's answer`,
  ) as { token?: unknown; access_token?: unknown };
  const token = body.token ?? body.access_token;
  if (typeof token !== "string" || !token)
    throw new BangerError(
      ErrorCode.Precondition,
      `registry ${ref.registry}: the token service returned no token`,
    );
  return `Bearer ${token}`;
}
