import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * banger's own folder (package.json, bin/, catalog/): two levels above this module, which holds
 * for src/paths/ under tsx, dist/paths/ and the CLI bundle, dist/cli/banger.cjs. Files found
 * relative to the package go through here, so moving code (or bundling it) cannot break them.
 */
export function packageRoot(): string {
  return path.dirname(path.dirname(path.dirname(fileURLToPath(import.meta.url))));
}

/** A file or folder of banger's package, e.g. `packagePath("bin", "bangerd")`. */
export function packagePath(...parts: string[]): string {
  return path.join(packageRoot(), ...parts);
}
