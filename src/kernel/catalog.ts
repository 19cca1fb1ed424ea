import fsp from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { z } from "zod";
import { BangerError, ErrorCode } from "../api/errors.js";

export const KernelCatalogEntry = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/, "lower-case letters, digits, '.', '_' and '-'"),
  distro: z.string(),
  arch: z.string(),
  kernel_version: z.string(),
  tarball_url: z.string().min(1),
  tarball_sha256: z.string().regex(/^[0-9a-f]{64}$/i, "64 hex digits"),
  size_bytes: z.number().int().positive(),
  description: z.string(),
});
export type KernelCatalogEntry = z.infer<typeof KernelCatalogEntry>;

export const KernelCatalog = z.object({
  version: z.literal(1),
  entries: z.array(KernelCatalogEntry),
});
export type KernelCatalog = z.infer<typeof KernelCatalog>;

/** The catalog shipped with banger (no hosted bundles yet: the default kernel is derived locally). */
export const EMBEDDED_KERNEL_CATALOG = fileURLToPath(
  new URL("../../catalog/kernels.json", import.meta.url),
);

/** Parses catalog JSON; a relative tarball_url is resolved against the catalog's own location. */
export function parseKernelCatalog(text: string, source: string): KernelCatalog {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `kernel catalog ${source} is not valid JSON: ${(err as Error).message}`,
    );
  }
  const parsed = KernelCatalog.safeParse(json);
  if (!parsed.success) {
    throw new BangerError(
      ErrorCode.InvalidParams,
      `kernel catalog ${source} is invalid: ${z.prettifyError(parsed.error)}`,
    );
  }
  const names = new Set<string>();
  for (const entry of parsed.data.entries) {
    if (names.has(entry.name))
      throw new BangerError(
        ErrorCode.InvalidParams,
        `kernel catalog ${source} lists "${entry.name}" twice`,
      );
    names.add(entry.name);
    entry.tarball_url = resolveAgainst(entry.tarball_url, source);
  }
  return parsed.data;
}

function resolveAgainst(url: string, source: string): string {
  if (/^[a-z]+:\/\//.test(url) || url.startsWith("/")) return url;
  if (/^https?:\/\//.test(source)) return new URL(url, source).toString();
  return fileURLToPath(new URL(url, pathToFileURL(path.resolve(source))));
}

/** Loads the catalog from BANGER_KERNEL_CATALOG (path or URL) or the embedded one. */
export async function loadKernelCatalog(env: NodeJS.ProcessEnv): Promise<KernelCatalog> {
  const source = env.BANGER_KERNEL_CATALOG || EMBEDDED_KERNEL_CATALOG;
  let text: string;
  if (/^https?:\/\//.test(source)) {
    const response = await fetch(source).catch((err: Error) => {
      throw new BangerError(
        ErrorCode.Precondition,
        `cannot fetch kernel catalog ${source}: ${err.message}`,
      );
    });
    if (!response.ok)
      throw new BangerError(
        ErrorCode.NotFound,
        `cannot fetch kernel catalog ${source}: HTTP ${response.status}`,
      );
    text = await response.text();
  } else {
    text = await fsp.readFile(source, "utf8").catch((err: Error) => {
      throw new BangerError(
        ErrorCode.NotFound,
        `cannot read kernel catalog ${source}: ${err.message}`,
        "check BANGER_KERNEL_CATALOG",
      );
    });
  }
  return parseKernelCatalog(text, source);
}

export function findCatalogEntry(catalog: KernelCatalog, name: string): KernelCatalogEntry | null {
  return catalog.entries.find((e) => e.name === name) ?? null;
}
