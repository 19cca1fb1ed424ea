// Fuzzer for the layer flattener: feeds random and mutated tar layers (plain, gzip, zstd) to
// flattenLayers in a temp root under a time budget and reports inputs run and failures.
// A failure is: anything written, changed or deleted outside the staging root (a canary
// directory beside it, and the work dir itself), an error that is not a BangerError, an
// input that runs past the per-input timeout, or file descriptors left open.
// Not part of `make test`: run `make fuzz`.
// Usage: node --import tsx bench/fuzz-flatten.ts [seconds=60]   (env: FUZZ_SECONDS, FUZZ_SEED)
//        FUZZ_REPLAY=<dir with layer-N files> node --import tsx bench/fuzz-flatten.ts   (one input)
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import tar from "tar-stream";
import { compress as zstdCompress } from "zstd-napi";
import { BangerError } from "../src/api/errors.js";
import { flattenLayers } from "../src/image/oci/flatten.js";

const seconds = Number(process.argv[2] ?? process.env.FUZZ_SECONDS ?? 60);
const PER_INPUT_MS = 10_000;
let seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
const firstSeed = seed;

// A small deterministic PRNG (mulberry32), so a run can be replayed from its seed.
function rand(): number {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

const work = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fuzz-"));
const canary = path.join(work, "canary");
const failuresDir = path.join(work, "failures");

const NAMES = [
  "link",
  "link/",
  "link/.wh..wh..opq",
  "link/.wh.keep",
  "link/sub/.wh.deep",
  "link/new",
  "rel",
  "rel/.wh.keep",
  "rel/.wh..wh..opq",
  "run",
  "run/.containerenv",
  ".dockerenv",
  ".wh...",
  ".wh..",
  ".wh.",
  "a/.wh...",
  ".wh..wh..opq",
  "a/",
  "a/b",
  "a/b/c",
  "a/.wh.b",
  "a/.wh..wh..opq",
  "../canary/keep",
  "/etc/passwd",
  "./a/../../x",
  "a//b",
  "h",
  "h2",
  "",
  ".",
  "./",
  "é/ü",
  'q"uote',
  "nl\nname",
  `${"x".repeat(120)}/${"y".repeat(120)}`,
];
const LINKS = [
  canary,
  `${canary}/sub`,
  "../canary",
  "../../canary",
  "a",
  "a/b",
  "link",
  "/",
  ".",
  "",
];

interface Seed {
  name: string;
  type?: "file" | "directory" | "symlink" | "link" | "fifo" | "character-device";
  body?: string;
  linkname?: string;
  mode?: number;
  pax?: Record<string, string>;
}

const SEEDS: Seed[][] = [
  [
    { name: "a/", type: "directory" },
    { name: "a/b", body: "b" },
    { name: "a/h", type: "link", linkname: "a/b" },
    { name: "a/s", type: "symlink", linkname: "/usr/bin/x" },
  ],
  [{ name: "link", type: "symlink", linkname: canary }],
  [{ name: "link/.wh..wh..opq" }],
  [{ name: "link/.wh.keep" }, { name: "link/.wh.sub" }],
  [{ name: "rel", type: "symlink", linkname: "../canary" }],
  [
    { name: "run", type: "symlink", linkname: canary },
    { name: "etc/x", body: "x" },
  ],
  [{ name: "h", type: "link", linkname: "link/keep" }],
  [
    { name: "a/b", body: "one" },
    { name: "a/.wh..wh..opq" },
    { name: "a/c", body: "two", mode: 0o4755 },
  ],
  [{ name: ".wh.a" }, { name: "a", type: "symlink", linkname: canary }],
  [
    { name: "d/", type: "directory", mode: 0o555 },
    { name: "d/f", body: "f", pax: { "SCHILY.xattr.security.capability": "x".repeat(20) } },
    { name: "dev/null", type: "character-device" },
    { name: "p", type: "fifo" },
  ],
  [
    { name: "a", type: "directory" },
    { name: "a", body: "now a file" },
    { name: "a/x", body: "x" },
  ],
];

async function pack(entries: Seed[]): Promise<Buffer> {
  const p = tar.pack();
  for (const e of entries) {
    const type = e.type ?? "file";
    const body = type === "file" ? Buffer.from(e.body ?? "") : Buffer.alloc(0);
    p.entry(
      {
        name: e.name,
        type,
        size: body.length,
        mode: e.mode ?? (type === "directory" ? 0o755 : 0o644),
        ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
        ...(e.pax ? { pax: e.pax } : {}),
      },
      body,
    );
  }
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A random layer built from the dictionaries: valid tar, hostile content. */
async function randomEntries(): Promise<Buffer> {
  const entries: Seed[] = [];
  for (let i = 0, n = 1 + int(8); i < n; i++) {
    const type = pick(["file", "file", "directory", "symlink", "link", "fifo"] as const);
    entries.push({
      name: pick(NAMES),
      type,
      body: pick(["", "x", "hello\n"]),
      ...(type === "symlink" || type === "link" ? { linkname: pick([...LINKS, ...NAMES]) } : {}),
      mode: pick([0o644, 0o755, 0o4755, 0o000, 0o7777]),
    });
  }
  return pack(entries);
}

/** Re-computes a ustar header's checksum, so mutations get past it and reach the flattener. */
function fixChecksum(buf: Buffer, off: number): void {
  if (off + 512 > buf.length) return;
  buf.fill(0x20, off + 148, off + 156);
  let sum = 0;
  for (let i = off; i < off + 512; i++) sum += buf[i]!;
  buf.write(`${sum.toString(8).padStart(6, "0")}\0 `, off + 148, "ascii");
}

function mutate(src: Buffer): Buffer {
  let buf = Buffer.from(src);
  const headers: number[] = [];
  for (let off = 0; off + 512 <= buf.length; off += 512) {
    if (buf.subarray(off + 257, off + 262).toString("latin1") === "ustar") headers.push(off);
  }
  for (let m = 0, n = 1 + int(4); m < n; m++) {
    const off = headers.length ? pick(headers) : 0;
    // Header edits need a whole header block (an earlier cut may have shortened the buffer).
    if (off + 512 > buf.length) break;
    switch (int(9)) {
      case 0: // name
        buf.fill(0, off, off + 100);
        buf.write(pick(NAMES).slice(0, 100), off, "utf8");
        break;
      case 1: // type flag
        buf[off + 156] = pick([..."0123456789gxLKS", "\0", "Z"]).charCodeAt(0);
        break;
      case 2: // link name
        buf.fill(0, off + 157, off + 257);
        buf.write(pick([...LINKS, ...NAMES]).slice(0, 100), off + 157, "utf8");
        break;
      case 3: // size field: random octal, huge, or base-256
        if (rand() < 0.3) {
          buf[off + 124] = 0x80;
          for (let i = 125; i < 136; i++) buf[off + i] = int(256);
        } else {
          buf.write(
            pick(["77777777777", "00000001000", "00000000000", "1", "zzzz"]).padEnd(11, "\0"),
            off + 124,
            "ascii",
          );
        }
        break;
      case 4: // random bytes anywhere
        for (let i = 0, k = 1 + int(16); i < k; i++) buf[int(buf.length)] = int(256);
        break;
      case 5: // truncate
        buf = buf.subarray(0, int(buf.length));
        break;
      case 6: // mode, uid, gid
        buf.write(pick(["7777777", "0000000", "-1", "4755"]).padEnd(7, "\0"), off + 100, "ascii");
        buf.write(pick(["7777777", "0000000", "1750"]).padEnd(7, "\0"), off + 108, "ascii");
        break;
      case 7: // a PAX header with a hostile path or size
        return Buffer.concat([paxHeader(), buf]);
      case 8: // duplicate a header block elsewhere
        if (headers.length)
          buf = Buffer.concat([
            buf.subarray(0, off),
            buf.subarray(off, off + 512),
            buf.subarray(off),
          ]);
        break;
    }
    if (rand() < 0.9) fixChecksum(buf, off);
  }
  return buf;
}

function paxHeader(): Buffer {
  const key = pick(["path", "linkpath", "size", "SCHILY.xattr.security.capability", "uid"]);
  const value = pick([...NAMES, ...LINKS, "99999999999999999999", "-5", "\u0000\u0001"]);
  const record = (k: string, v: string) => {
    const body = ` ${k}=${v}\n`;
    let len = body.length + 1;
    while (`${len}${body}`.length !== len) len++;
    return `${len}${body}`;
  };
  const text = Buffer.from(record(key, value));
  const header = Buffer.alloc(512);
  header.write("PaxHeader", 0);
  header.write("0000644\0", 100);
  header.write(`${text.length.toString(8).padStart(11, "0")}\0`, 124);
  header.write("x", 156);
  header.write("ustar\x0000", 257);
  fixChecksum(header, 0);
  const padded = Buffer.alloc(Math.ceil(text.length / 512) * 512);
  text.copy(padded);
  return Buffer.concat([header, padded]);
}

function frame(raw: Buffer): Buffer {
  const r = rand();
  let out = raw;
  if (r < 0.35) out = zlib.gzipSync(raw);
  else if (r < 0.6) out = zstdCompress(raw);
  // Damage the framing now and then: a flipped byte or a cut in the compressed stream.
  if (out !== raw && rand() < 0.2) {
    out = Buffer.from(out);
    if (rand() < 0.5) out[int(out.length)] = int(256);
    else out = out.subarray(0, int(out.length));
  }
  return out;
}

async function makeInput(): Promise<Buffer[]> {
  const layers: Buffer[] = [];
  for (let i = 0, n = 1 + int(3); i < n; i++) {
    const kind = int(10);
    let raw: Buffer;
    if (kind === 0) raw = Buffer.from(Array.from({ length: int(2048) }, () => int(256)));
    else if (kind < 4) raw = await randomEntries();
    else if (kind < 6) raw = await pack(pick(SEEDS));
    else raw = mutate(await pack(pick(SEEDS)));
    layers.push(frame(raw));
  }
  return layers;
}

/** Names, types, sizes, link counts and contents of everything under `dir`. */
async function snapshot(dir: string): Promise<string> {
  const out: string[] = [];
  const walk = async (rel: string) => {
    for (const name of (await fs.readdir(path.join(dir, rel)).catch(() => [])).sort()) {
      const child = path.join(rel, name);
      const st = await fs.lstat(path.join(dir, child));
      let content = "";
      if (st.isFile())
        content = createHash("sha256")
          .update(await fs.readFile(path.join(dir, child)))
          .digest("hex");
      if (st.isSymbolicLink()) content = await fs.readlink(path.join(dir, child));
      out.push(`${child} ${st.mode.toString(8)} ${st.nlink} ${st.size} ${content}`);
      if (st.isDirectory()) await walk(child);
    }
  };
  await walk("");
  return out.join("\n");
}

async function makeCanary(): Promise<void> {
  await fs.rm(canary, { recursive: true, force: true });
  await fs.mkdir(path.join(canary, "sub"), { recursive: true });
  for (const f of ["keep", ".containerenv", ".dockerenv", "sub/deep", "a"]) {
    await fs.writeFile(path.join(canary, f), `canary ${f}`);
  }
}

if (process.env.FUZZ_REPLAY) {
  const from = process.env.FUZZ_REPLAY;
  const layers = (await fs.readdir(from)).filter((n) => n.startsWith("layer-")).sort();
  const root = path.join(work, "tree");
  await fs.mkdir(root);
  const timer = setTimeout(() => {
    console.log(`replay: still running after ${PER_INPUT_MS} ms (a hang)`);
    process.exit(2);
  }, PER_INPUT_MS);
  try {
    const result = await flattenLayers(
      layers.map((n) => path.join(from, n)),
      root,
      { limits: { maxLayerBytes: 2 ** 30, maxImageBytes: 32 * 2 ** 20, maxEntries: 5_000 } },
    );
    console.log(`replay: accepted, ${result.entries.size} entries`);
    result.entries.close();
  } catch (err) {
    console.log(`replay: ${err instanceof BangerError ? "refused" : "CRASHED"}: ${String(err)}`);
  } finally {
    clearTimeout(timer);
    await fs.rm(work, { recursive: true, force: true });
  }
  process.exit(0);
}

await makeCanary();
await fs.mkdir(failuresDir);
const canaryBefore = await snapshot(canary);
const limits = { maxLayerBytes: 2 ** 30, maxImageBytes: 32 * 2 ** 20, maxEntries: 5_000 };
const deadline = Date.now() + seconds * 1000;
// Descriptors the flattener leaves open would, in the daemon, end in EMFILE for everyone.
const openFds = async () => (await fs.readdir("/proc/self/fd")).length;
const fdsAtStart = await openFds();
let inputs = 0;
const failures: string[] = [];
const unclear = new Map<string, number>();
const outcomes = new Map<string, number>();

while (Date.now() < deadline) {
  const inputSeed = seed;
  const layers = await makeInput();
  const dir = path.join(work, `run-${inputs}`);
  await fs.mkdir(dir);
  const files: string[] = [];
  for (const [i, layer] of layers.entries()) {
    const file = path.join(dir, `layer-${i}`);
    await fs.writeFile(file, layer);
    files.push(file);
  }
  const root = path.join(dir, "tree");
  await fs.mkdir(root);
  const workBefore = (await fs.readdir(work)).sort().join(",");
  let problem: string | null = null;
  let timer: NodeJS.Timeout | undefined;
  try {
    const result = await Promise.race([
      flattenLayers(files, root, { limits, entriesFile: path.join(dir, "entries.db") }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error("HANG")), PER_INPUT_MS);
      }),
    ]);
    result.entries.close();
    outcomes.set("accepted", (outcomes.get("accepted") ?? 0) + 1);
  } catch (err) {
    if (err instanceof Error && err.message === "HANG") problem = `hang (> ${PER_INPUT_MS} ms)`;
    else if (!(err instanceof BangerError))
      problem = `not a BangerError: ${String((err as Error)?.stack ?? err)}`;
    else {
      outcomes.set("refused", (outcomes.get("refused") ?? 0) + 1);
      // A raw errno in the message means the flattener did not understand what it met.
      const errno = /\b(E[A-Z]{3,})\b/.exec(err.message)?.[1];
      if (errno)
        unclear.set(
          err.message.replace(/'[^']*'/g, "'…'").slice(0, 160),
          (unclear.get(err.message) ?? 0) + 1,
        );
    }
  } finally {
    clearTimeout(timer);
  }
  inputs++;
  if ((await snapshot(canary)) !== canaryBefore) problem = `${problem ?? ""} canary changed`.trim();
  const workAfter = (await fs.readdir(work)).sort().join(",");
  if (workAfter !== workBefore) problem = `${problem ?? ""} work dir changed: ${workAfter}`.trim();
  if (inputs % 200 === 0 && (await openFds()) > fdsAtStart + 20)
    problem = `${problem ?? ""} file descriptors leak (${fdsAtStart} -> ${await openFds()})`.trim();
  if (problem) {
    failures.push(`seed ${inputSeed}: ${problem}`);
    const keep = path.join(failuresDir, `seed-${inputSeed}`);
    await fs.mkdir(keep, { recursive: true });
    for (const [i, layer] of layers.entries())
      await fs.writeFile(path.join(keep, `layer-${i}`), layer);
    await makeCanary();
  }
  await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
}

console.log(`fuzz-flatten: ${inputs} inputs in ${seconds} s (seed ${firstSeed})`);
console.log(`  outcomes: ${[...outcomes].map(([k, v]) => `${k} ${v}`).join(", ")}`);
console.log(`  failures: ${failures.length}`);
for (const f of failures.slice(0, 20)) console.log(`    ${f}`);
if (unclear.size) {
  console.log(`  refused with a raw errno in the message (worth a clearer error): ${unclear.size}`);
  for (const [m, n] of [...unclear].slice(0, 10)) console.log(`    ${n}x ${m}`);
}
if (failures.length) console.log(`  failing inputs kept in ${failuresDir}`);
else await fs.rm(work, { recursive: true, force: true });
process.exit(failures.length ? 1 : 0);
