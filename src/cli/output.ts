import type { Writable } from "node:stream";
import { visible } from "../util/terminal-text.js";

export interface Out {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
}

export function printJson(out: Out, value: unknown): void {
  out.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Aligned columns with a header row: easy to read, and to cut/awk when piped. Cells are
 * shown with their control characters escaped (many hold what a guest or a registry said).
 */
export function formatTable(headers: string[], cells: string[][]): string {
  const rows = cells.map((r) => r.map(visible));
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join("   ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

/** A key/value block for `show` commands; values are shown with control characters escaped. */
export function formatFields(fields: Array<[string, string]>): string {
  const width = Math.max(...fields.map(([k]) => k.length));
  return fields.map(([k, v]) => `${`${k}:`.padEnd(width + 1)} ${visible(v)}`).join("\n") + "\n";
}

export function orDash(value: string | number | null | undefined): string {
  return value === null || value === undefined || value === "" ? "-" : String(value);
}
