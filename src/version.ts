import { readFileSync } from "node:fs";
import { packagePath } from "./paths/package-root.js";

/** The package version, from banger's package.json. */
export function bangerVersion(): string {
  const pkg = JSON.parse(readFileSync(packagePath("package.json"), "utf8")) as {
    version: string;
  };
  return pkg.version;
}
