import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { parseConfig } from "../src/config/config.js";
import {
  ConsoleRecorders,
  consoleFiles,
  consoleMark,
  consoleTail,
  LogFollower,
  readConsole,
  RotatingLog,
} from "../src/vmm/console-log.js";

let dir: string;
before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-console-"));
});
after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

const MiB = 1024 * 1024;
const onDisk = (file: string) =>
  consoleFiles(file).reduce((n, f) => n + (fs.existsSync(f) ? fs.statSync(f).size : 0), 0);

test("the rotating log keeps the newest bytes and never more than its bound", () => {
  const file = path.join(dir, "rot.log");
  const log = new RotatingLog(file, 1000);
  let all = "";
  for (let i = 0; i < 500; i++) {
    const line = `line ${i}\n`;
    all += line;
    log.write(Buffer.from(line));
    assert.ok(onDisk(file) <= 1000, `bound after line ${i}`);
  }
  log.close();
  const kept = readConsole(file).toString();
  assert.ok(all.endsWith(kept), "what is kept is the newest output, in order");
  assert.ok(kept.length >= 500, "at least half the bound is kept");
  // Reopened (a daemon restart), it goes on from the current size.
  const again = new RotatingLog(file, 1000);
  again.write(Buffer.alloc(3000, "x"));
  again.close();
  assert.ok(onDisk(file) <= 1000);
});

test("following reads only what is new and crosses rotations without losing the newest", () => {
  const file = path.join(dir, "follow.log");
  const log = new RotatingLog(file, 200);
  const got: Buffer[] = [];
  const follower = new LogFollower(file, (c) => got.push(c));
  follower.poll(); // nothing yet
  let written = "";
  const put = (s: string) => {
    written += s;
    log.write(Buffer.from(s));
  };
  put("boot\n");
  follower.poll();
  assert.equal(Buffer.concat(got).toString(), "boot\n");
  // Small steps: every rotation is seen by a poll, so the follower sees everything.
  for (let i = 0; i < 60; i++) {
    put(`msg ${i}\n`);
    follower.poll();
  }
  assert.equal(Buffer.concat(got).toString(), written);
  // A burst of several rotations between two polls: the newest output still arrives, in order.
  got.length = 0;
  let burst = "";
  for (let i = 0; i < 100; i++) {
    burst += `b${i}\n`;
    log.write(Buffer.from(`b${i}\n`));
  }
  follower.poll();
  const seen = Buffer.concat(got).toString();
  assert.ok(burst.endsWith(readConsole(file).toString()));
  assert.ok(seen.endsWith(readConsole(file).toString().slice(-50)), "ends with the newest");
  follower.close();
  log.close();
});

test("a follower started on a rotated log prints the rotated half first", () => {
  const file = path.join(dir, "late.log");
  const log = new RotatingLog(file, 100);
  log.write(Buffer.alloc(80, "a"));
  log.close();
  const got: Buffer[] = [];
  const follower = new LogFollower(file, (c) => got.push(c));
  follower.poll();
  follower.close();
  assert.equal(Buffer.concat(got).toString(), readConsole(file).toString());
});

test("a console socket flooded with 64 MiB leaves at most the bound on disk", async () => {
  // The daemon's side of QEMU's console socket: the server here plays QEMU's part.
  const sock = path.join(dir, "console.sock");
  const file = path.join(dir, "console.log");
  const server = net.createServer((c) => {
    const chunk = Buffer.alloc(MiB, "A");
    let left = 64;
    const pump = () => {
      while (left > 0) {
        left--;
        if (!c.write(chunk)) return void c.once("drain", pump);
      }
      c.end();
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(sock, r));
  const consoles = new ConsoleRecorders();
  const closed = new Promise<void>((r) => server.once("connection", (c) => c.once("close", r)));
  await consoles.attach("vm", sock, file, 4 * MiB);
  await closed;
  await new Promise((r) => setTimeout(r, 200));
  consoles.closeAll();
  server.close();
  assert.ok(onDisk(file) <= 4 * MiB, `${onDisk(file)} bytes on disk`);
  assert.ok(onDisk(file) >= 2 * MiB, "the newest half at least");
});

test("a boot error's console tail: this boot's last 20 lines of 4 KiB at most, escaped", () => {
  const file = path.join(dir, "tail.log");
  const log = new RotatingLog(file, 1 * MiB);
  log.write(Buffer.from("an earlier boot: its own panic\n"));
  const mark = consoleMark(file);
  for (let i = 0; i < 50; i++) log.write(Buffer.from(`line ${i}\r\n`));
  log.write(Buffer.from("Kernel panic \x1b]52;c;aGk=\x07 \x1b[2J\n\n"));
  log.close();
  const tail = consoleTail(file, mark);
  const lines = tail.split("\n");
  assert.equal(lines.length, 20, tail);
  assert.equal(lines[0], "line 31");
  assert.equal(lines.at(-1), "Kernel panic \\x1b]52;c;aGk=\\x07 \\x1b[2J");
  assert.doesNotMatch(tail, /[\x00-\x08\x0b-\x1f\x7f]/, "a control character reaches the error");
  assert.doesNotMatch(tail, /earlier boot/);
  // Without a mark (no log before the boot) everything counts.
  assert.match(consoleTail(file, null, 100), /earlier boot/);
  // Long lines: 4 KiB at most, the cut first line dropped.
  const long = path.join(dir, "tail-long.log");
  fs.writeFileSync(long, `${"y".repeat(10_000)}\n${"z".repeat(3000)}\nend\n`);
  const t = consoleTail(long, null);
  assert.equal(t, `${"z".repeat(3000)}\nend`);
  // A boot that printed nothing, or no log at all: nothing to quote.
  assert.equal(consoleTail(file, consoleMark(file)), "");
  assert.equal(consoleTail(path.join(dir, "none.log"), null), "");
});

test("a console tail across a rotation reads the rotated half from this boot's mark", () => {
  const file = path.join(dir, "tail-rot.log");
  const log = new RotatingLog(file, 200);
  log.write(Buffer.from("old boot\n"));
  const mark = consoleMark(file);
  for (let i = 0; i < 30; i++) log.write(Buffer.from(`n${i}\n`)); // past the half (100 bytes): rotated
  log.close();
  assert.ok(fs.existsSync(consoleFiles(file)[0]), "no rotation happened");
  const all = Array.from({ length: 30 }, (_, i) => `n${i}`);
  assert.equal(consoleTail(file, mark, 100), all.join("\n"), "the earlier boot's line is left out");
  assert.equal(consoleTail(file, mark), all.slice(-20).join("\n"));
});

test("a console recorder tells when the VMM ends the connection, never for its own detach", async () => {
  const sock = path.join(dir, "ending.sock");
  const file = path.join(dir, "ending.log");
  const peers: net.Socket[] = [];
  const server = net.createServer((c) => peers.push(c));
  await new Promise<void>((r) => server.listen(sock, r));
  try {
    const consoles = new ConsoleRecorders();
    const ended: string[] = [];
    const off = consoles.onEnd((key) => ended.push(key));
    await consoles.attach("a", sock, file, MiB);
    await consoles.attach("b", sock, file, MiB);
    consoles.detach("b");
    for (let i = 0; i < 100 && peers.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    // The VMM's last words, then its exit: they are in the log once whenEnded resolves.
    peers[0]!.end("last words before the exit\n");
    await consoles.whenEnded("a", 5000);
    assert.match(fs.readFileSync(file, "utf8"), /last words before the exit/);
    for (let i = 0; i < 100 && ended.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(ended, ["a"], "only the recorder whose peer ended is reported");
    // Nothing recorded under a key: nothing to wait for.
    await consoles.whenEnded("b", 5000);
    off();
    consoles.closeAll();
  } finally {
    for (const p of peers) p.destroy();
    server.close();
  }
});

test("console_log_size: a size, 4 MiB by default, bounded both ways", () => {
  assert.equal(parseConfig("", "c.toml").consoleLogBytes, 4 * MiB);
  assert.equal(parseConfig('console_log_size = "16M"', "c.toml").consoleLogBytes, 16 * MiB);
  assert.throws(() => parseConfig('console_log_size = "1K"', "c.toml"), /64K to 1G/);
  assert.throws(() => parseConfig('console_log_size = "2G"', "c.toml"), /64K to 1G/);
  assert.throws(() => parseConfig("console_log_size = true", "c.toml"), /console_log_size/);
});
