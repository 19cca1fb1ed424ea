import { parseSize } from "../util/size.js";

/** A TOML table as smol-toml returns it. */
export type Table = Record<string, unknown>;

/** Throws the config error for a key (or entry) and why its value is refused. */
export type Fail = (where: string, why: string) => never;

/** A whole number within [min, max], or a config error naming the key and the value given. */
export function wholeNumber(
  v: unknown,
  [min, max]: [number, number],
  key: string,
  rule: string,
  fail: Fail,
): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    fail(key, `${JSON.stringify(v)} ${rule}`);
  return v as number;
}

/** Seconds as a whole number or "90s" / "2m", within [min, max] seconds; milliseconds out. */
export function duration(
  v: unknown,
  [min, max]: [number, number],
  key: string,
  fail: Fail,
): number {
  const rule = `must be from ${min}s to ${max / 60}m: a whole number of seconds, or "90s" / "2m"`;
  let seconds: number | null = null;
  if (typeof v === "number" && Number.isInteger(v)) seconds = v;
  if (typeof v === "string") {
    const m = /^(\d{1,7})(s|m)$/.exec(v);
    if (m) seconds = Number(m[1]) * (m[2] === "m" ? 60 : 1);
  }
  // JSON.stringify would print inf and nan as "null".
  const shown = typeof v === "number" ? String(v) : JSON.stringify(v);
  if (seconds === null || seconds < min || seconds > max) fail(key, `${shown} ${rule}`);
  return (seconds as number) * 1000;
}

export function checkKeys(t: Table, allowed: string[], prefix: string, fail: Fail): void {
  for (const key of Object.keys(t)) {
    if (allowed.includes(key)) continue;
    const guess = closest(key, allowed);
    fail(
      `${prefix}${key}`,
      `unknown key${guess ? ` (did you mean "${prefix}${guess}"?)` : `; known keys: ${allowed.join(", ")}`}`,
    );
  }
}

export function table(v: unknown, where: string, fail: Fail): Table {
  if (typeof v !== "object" || v === null || Array.isArray(v) || v instanceof Date) {
    return fail(where, "must be a table");
  }
  return v as Table;
}

export function nonEmptyString(v: unknown, where: string, fail: Fail): string {
  if (typeof v !== "string") return fail(where, `expected a string, got ${JSON.stringify(v)}`);
  if (v.trim() === "") return fail(where, "must not be empty");
  return v;
}

export function oneOf<T extends string>(
  v: unknown,
  options: readonly T[],
  where: string,
  fail: Fail,
): T {
  if (typeof v === "string" && (options as readonly string[]).includes(v)) return v as T;
  return fail(where, `${JSON.stringify(v)} must be one of: ${options.join(", ")}`);
}

export function size(v: unknown, where: string, fail: Fail): number {
  // A bare integer means MiB, like on the command line.
  if (typeof v === "number" || typeof v === "bigint") {
    if (!Number.isInteger(Number(v)) || Number(v) <= 0)
      return fail(where, `${String(v)} must be a positive size`);
    const bytes = Number(v) * 1024 * 1024;
    if (!Number.isSafeInteger(bytes)) return fail(where, `${String(v)} MiB is too large`);
    return bytes;
  }
  if (typeof v !== "string")
    return fail(where, `expected a size like "8G", got ${JSON.stringify(v)}`);
  try {
    return parseSize(v);
  } catch (err) {
    return fail(where, (err as Error).message);
  }
}

export function subnet(v: unknown, fail: Fail): string {
  const text = nonEmptyString(v, "network.subnet", fail);
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  if (!m || octets.some((o) => o > 255))
    return fail("network.subnet", `"${text}" is not an IPv4 CIDR like 172.30.0.0/24`);
  const prefix = Number(m[5]);
  if (prefix < 16 || prefix > 29)
    return fail("network.subnet", `prefix /${prefix} must be between /16 and /29`);
  const [a, b] = octets as [number, number, number, number];
  // Guests get addresses from it and the host routes it to the bridge: a public range would
  // shadow real hosts on the internet.
  const rfc1918 = a === 10 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168);
  if (!rfc1918)
    return fail(
      "network.subnet",
      `"${text}" is not a private range; use one inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16`,
    );
  const addr = octets.reduce((n, o) => n * 256 + o, 0);
  const size = 2 ** (32 - prefix);
  if (addr % size !== 0) {
    const net = addr - (addr % size);
    const dotted = [24, 16, 8, 0].map((s) => Math.floor(net / 2 ** s) % 256).join(".");
    return fail("network.subnet", `"${text}" has host bits set; did you mean ${dotted}/${prefix}?`);
  }
  return text;
}

export function checkPath(p: string, where: string, fail: Fail): void {
  if (/^~[^/]/.test(p))
    fail(`${where} "${p}"`, "~user/ paths are not supported; use ~/ or an absolute path");
  if (p.split("/").includes("..")) fail(`${where} "${p}"`, "must not contain '..'");
  if (p === "~/" || p === "/" || p === "/root/")
    fail(`${where} "${p}"`, "must name a file or directory, not a root");
}

/** The allowed key within edit distance 2, if any. */
function closest(key: string, options: string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const option of options) {
    const d = editDistance(key.toLowerCase(), option);
    if (d < bestDistance) {
      best = option;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return row[b.length]!;
}
