import { BangerError, ErrorCode } from "../api/errors.js";

const UNITS: Record<string, number> = {
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
};

const SIZE_PATTERN = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i;

function sizeError(input: string, why: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `invalid size "${input}": ${why}`,
    "use a number with an optional unit K, M, G or T (e.g. 512M, 8G, 1.5GiB); a bare number means MiB",
  );
}

/**
 * Parses sizes as users type them: `8G`, `8g`, `8GiB`, `8gb`, `512M`, `1.5G`.
 * Units are powers of 1024; a bare number means MiB (so `2048` is 2 GiB).
 */
export function parseSize(input: string): number {
  const text = input.trim();
  if (text === "") throw sizeError(input, "it is empty");
  if (text.startsWith("-")) throw sizeError(input, "sizes cannot be negative");
  const match = SIZE_PATTERN.exec(text);
  if (!match) throw sizeError(input, "not a size");
  const [, number, unit, suffix] = match as unknown as [string, string, string, string | undefined];
  // "B" alone (no K/M/G/T) would be ambiguous with the bare-MiB rule: say bytes explicitly is not supported.
  if (unit === "" && suffix !== undefined)
    throw sizeError(input, "give a unit K, M, G or T before B");
  const multiplier = unit === "" ? UNITS.m! : UNITS[unit.toLowerCase()]!;
  const bytes = Math.floor(Number(number) * multiplier);
  if (!Number.isFinite(bytes) || bytes > Number.MAX_SAFE_INTEGER)
    throw sizeError(input, "too large");
  if (bytes <= 0) throw sizeError(input, "must be greater than zero");
  return bytes;
}

/** Human form for output: `0 B`, `512 B`, `1.5 KiB`, `2 GiB`. One decimal at most. */
export function formatSizeBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const names = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes / 1024;
  let i = 0;
  while (value >= 1024 && i < names.length - 1) {
    value /= 1024;
    i++;
  }
  const rounded = Math.round(value * 10) / 10;
  // 1023.96 KiB rounds to 1024.0: show it as the next unit instead.
  if (rounded >= 1024 && i < names.length - 1) return `1 ${names[i + 1]}`;
  return `${Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1)} ${names[i]}`;
}

/** Compact form that parseSize reads back exactly (for whole KiB): `8G`, `1536M`, `512K`. */
export function formatSizeShort(bytes: number): string {
  for (const [unit, size] of [
    ["T", UNITS.t!],
    ["G", UNITS.g!],
    ["M", UNITS.m!],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${Math.ceil(bytes / 1024)}K`;
}
