// Hostile serial consoles: what a guest can print, fed through a real unix socket (the one
// QEMU's console chardev is) into the daemon's recorder. The log must stay within its bound,
// keep the newest output, and leave no descriptor or file behind.
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import {
  CONSOLE_TAIL_BYTES,
  CONSOLE_TAIL_LINES,
  ConsoleRecorders,
  consoleFiles,
  consoleTail,
  readConsole,
} from "../../src/vmm/console-log.js";
import { runTable, type HostileRow } from "./harness.js";

const MiB = 1024 * 1024;
let dir: string;
before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-hostile-console-"));
});
after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

interface Flood {
  bound: number;
  /** What the "guest" writes, chunk by chunk (a generator keeps memory flat). */
  chunks: () => Generator<Buffer>;
  /** Stop writing and keep the connection open (a guest that goes quiet). */
  stallMs?: number;
  /** Tail the log must end with. */
  endsWith: string;
}

function* repeat(chunk: Buffer, times: number, last?: Buffer) {
  for (let i = 0; i < times; i++) yield chunk;
  if (last) yield last;
}

const rows: Array<HostileRow<Flood>> = [
  {
    name: "64 MiB of text",
    input: {
      bound: 4 * MiB,
      chunks: () => repeat(Buffer.alloc(MiB, "A"), 64, Buffer.from("END\n")),
      endsWith: "END\n",
    },
    expect: null,
  },
  {
    name: "64 MiB without a newline",
    input: {
      bound: 2 * MiB,
      chunks: () => repeat(Buffer.alloc(MiB, "x"), 64, Buffer.from("tail")),
      endsWith: "tail",
    },
    expect: null,
  },
  {
    name: "terminal escape sequences and NULs",
    input: {
      bound: MiB,
      chunks: () =>
        repeat(
          Buffer.from("\x1b]0;pwn\x07\x1b[2J\0\0\x9b31m".repeat(4096)),
          400,
          Buffer.from("ok"),
        ),
      endsWith: "ok",
    },
    expect: null,
  },
  {
    name: "a trickle of tiny writes",
    input: {
      bound: 64 * 1024,
      chunks: () => repeat(Buffer.from("."), 50_000, Buffer.from("!")),
      endsWith: "!",
    },
    expect: null,
  },
  {
    name: "the smallest bound and 32 MiB",
    input: {
      bound: 64 * 1024,
      chunks: () => repeat(Buffer.alloc(MiB, "z"), 32, Buffer.from("Z")),
      endsWith: "Z",
    },
    expect: null,
  },
  {
    name: "binary noise",
    input: {
      bound: MiB,
      chunks: () =>
        repeat(
          Buffer.from(Array.from({ length: 65536 }, (_, i) => (i * 131) & 255)),
          256,
          Buffer.from("fin"),
        ),
      endsWith: "fin",
    },
    expect: null,
  },
  {
    name: "goes quiet with the connection open",
    input: {
      bound: MiB,
      chunks: () => repeat(Buffer.alloc(MiB, "q"), 8, Buffer.from("quiet")),
      stallMs: 500,
      endsWith: "quiet",
    },
    expect: null,
  },
];

const fdCount = () => fs.readdirSync("/proc/self/fd").length;

async function flood(input: Flood, n: number): Promise<void> {
  const sock = path.join(dir, `c${n}.sock`);
  const file = path.join(dir, `c${n}.log`);
  const fdsBefore = fdCount();
  let peer: net.Socket | null = null;
  const server = net.createServer((c) => {
    peer = c;
    c.on("error", () => {});
    const it = input.chunks();
    const pump = () => {
      for (let r = it.next(); !r.done; r = it.next())
        if (!c.write(r.value)) return void c.once("drain", pump);
      if (!input.stallMs) c.end();
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(sock, r));
  const consoles = new ConsoleRecorders();
  const rssBefore = process.memoryUsage().rss;
  try {
    await consoles.attach("vm", sock, file, input.bound);
    // Wait, bounded, for the end of the output to be on disk.
    const deadline = Date.now() + 60_000;
    while (!readConsole(file).toString("latin1").endsWith(input.endsWith)) {
      assert.ok(Date.now() < deadline, "the newest output never reached the log");
      await new Promise((r) => setTimeout(r, 20));
    }
    if (input.stallMs) await new Promise((r) => setTimeout(r, input.stallMs));
    const onDisk = consoleFiles(file).reduce(
      (t, f) => t + (fs.existsSync(f) ? fs.statSync(f).size : 0),
      0,
    );
    assert.ok(onDisk <= input.bound, `${onDisk} bytes on disk, bound ${input.bound}`);
    // What a boot error would quote of it: bounded and escaped (at most 4 characters per byte: "\\x1b").
    const tail = consoleTail(file, null);
    assert.ok(tail.split("\n").length <= CONSOLE_TAIL_LINES, "more lines than the tail's bound");
    assert.ok(tail.length <= 4 * CONSOLE_TAIL_BYTES, `a ${tail.length}-character tail`);
    assert.doesNotMatch(
      tail,
      /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]/,
      "a control character in the tail",
    );
    const grew = process.memoryUsage().rss - rssBefore;
    assert.ok(grew < 64 * MiB, `the recorder's process grew by ${Math.round(grew / MiB)} MiB`);
  } finally {
    consoles.closeAll();
    (peer as net.Socket | null)?.destroy();
    await new Promise<void>((r) => server.close(() => r()));
    for (const f of [...consoleFiles(file), sock]) await fsp.rm(f, { force: true });
  }
  assert.equal(fdCount(), fdsBefore, "no descriptor left open");
}

test(
  "hostile console output stays within console_log_size, newest kept",
  { timeout: 300_000 },
  async () => {
    let n = 0;
    await runTable(rows, (input) => flood(input, n++), { roots: [dir] });
  },
);
