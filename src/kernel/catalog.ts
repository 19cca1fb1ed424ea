import { z } from "zod";
import { BundleEntryBase, loadCatalog, parseCatalog, type Catalog } from "../util/catalog.js";

export const KernelCatalogEntry = BundleEntryBase.extend({ kernel_version: z.string() });
export type KernelCatalogEntry = z.infer<typeof KernelCatalogEntry>;
export type KernelCatalog = Catalog<KernelCatalogEntry>;

export function parseKernelCatalog(text: string, source: string): KernelCatalog {
  return parseCatalog("kernel", KernelCatalogEntry, text, source);
}

/** BANGER_KERNEL_CATALOG (path or URL) or the shipped catalog/kernels.json (empty: the default kernel is derived locally). */
export function loadKernelCatalog(env: NodeJS.ProcessEnv): Promise<KernelCatalog> {
  return loadCatalog("kernel", KernelCatalogEntry, env, "BANGER_KERNEL_CATALOG", "kernels.json");
}

export function findCatalogEntry<E extends { name: string }>(
  catalog: Catalog<E>,
  name: string,
): E | null {
  return catalog.entries.find((e) => e.name === name) ?? null;
}
