import fsp from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { packagePath } from "../paths/package-root.js";
import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";

/** Fields every catalog entry has: a content-addressed bundle and what it is. */
export const BundleEntryBase = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, "lower-case letters, digits, '.', '_' and '-'"),
  distro: z.string(),
  arch: z.string(),
  tarball_url: z.string().min(1),
  tarball_sha256: z.string().regex(/^[0-9a-f]{64}$/i, "64 hex digits"),
  size_bytes: z.number().int().positive(),
  description: z.string(),
});

export interface Catalog<E> {
  version: 1;
  entries: E[];
}

/** Parses catalog JSON; a relative tarball_url is resolved against the catalog's own location. */
export function parseCatalog<S extends typeof BundleEntryBase>(
  kind: string,
  entry: S,
  text: string,
  source: string,
): Catalog<z.infer<S>> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${kind} catalog ${source} is not valid JSON: ${(err as Error).message}`,
    );
  }
  const parsed = z.object({ version: z.literal(1), entries: z.array(entry) }).safeParse(json);
  if (!parsed.success) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `${kind} catalog ${source} is invalid: ${z.prettifyError(parsed.error)}`,
    );
  }
  const names = new Set<string>();
  const entries = parsed.data.entries as Array<z.infer<S>>;
  for (const e of entries) {
    if (names.has(e.name))
      throw new BangerError(
        ErrorCode.InvalidParams,
        `${kind} catalog ${source} lists "${e.name}" twice`,
      );
    names.add(e.name);
    e.tarball_url = resolveAgainst(e.tarball_url, source);
  }
  return { version: 1, entries };
}

function resolveAgainst(url: string, source: string): string {
  if (/^[a-z]+:\/\//.test(url) || url.startsWith("/")) return url;
  if (/^https?:\/\//.test(source)) return new URL(url, source).toString();
  return fileURLToPath(new URL(url, pathToFileURL(path.resolve(source))));
}

/** Reads a catalog from a path or an http(s) URL. */
export async function readCatalogText(
  kind: string,
  source: string,
  envVar: string,
): Promise<string> {
  if (/^https?:\/\//.test(source)) {
    const response = await fetch(source).catch((err: Error) => {
      throw new BangerError(
        ErrorCode.Precondition,
        `cannot fetch ${kind} catalog ${source}: ${err.message}`,
      );
    });
    if (!response.ok)
      throw new BangerError(
        ErrorCode.NotFound,
        `cannot fetch ${kind} catalog ${source}: HTTP ${response.status}`,
      );
    return response.text();
  }
  return fsp.readFile(source, "utf8").catch((err: Error) => {
    throw new BangerError(
      ErrorCode.NotFound,
      `cannot read ${kind} catalog ${source}: ${err.message}`,
      `check ${envVar}`,
    );
  });
}

/** The catalog at `env[envVar]` (path or URL), else the one shipped in catalog/<file>. */
export async function loadCatalog<S extends typeof BundleEntryBase>(
  kind: string,
  entry: S,
  env: NodeJS.ProcessEnv,
  envVar: string,
  shippedFile: string,
): Promise<Catalog<z.infer<S>>> {
  const source = env[envVar] || packagePath("catalog", shippedFile);
  return parseCatalog(kind, entry, await readCatalogText(kind, source, envVar), source);
}
