import fs from "node:fs";
import net from "node:net";
import { visibleLines } from "../util/terminal-text.js";

/** What a guest's serial console may keep on disk unless the config says otherwise. */
/** The serial console's log in a VM's directory, whichever VMM wrote it. */
export const CONSOLE_LOG_FILE = "console.log";

export const DEFAULT_CONSOLE_LOG_BYTES = 4 * 1024 * 1024;

/** The console log's files, oldest first: the rotated half, then the current one. */
export function consoleFiles(file: string): [string, string] {
  return [`${file}.1`, file];
}

/**
 * A log that keeps only the newest `maxBytes`: `file` grows to half of it, then becomes
 * `file.1` (replacing the previous one) and a new `file` starts. Writes are synchronous:
 * the reader waits for the disk, so nothing piles up in memory.
 */
export class RotatingLog {
  private fd: number;
  private size: number;
  private readonly half: number;

  constructor(
    readonly file: string,
    maxBytes: number,
  ) {
    this.half = Math.max(1, Math.floor(maxBytes / 2));
    this.fd = fs.openSync(file, "a", 0o640);
    this.size = fs.fstatSync(this.fd).size;
  }

  write(chunk: Buffer): void {
    let rest = chunk;
    while (rest.length > 0) {
      if (this.size >= this.half) this.rotate();
      const n = Math.min(rest.length, this.half - this.size);
      fs.writeSync(this.fd, rest, 0, n);
      this.size += n;
      rest = rest.subarray(n);
    }
  }

  private rotate(): void {
    fs.closeSync(this.fd);
    fs.renameSync(this.file, consoleFiles(this.file)[0]);
    this.fd = fs.openSync(this.file, "a", 0o640);
    this.size = 0;
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** The whole kept console (rotated half first), for `vm logs` without -f. */
export function readConsole(file: string): Buffer {
  return Buffer.concat(
    consoleFiles(file).map((f) => (fs.existsSync(f) ? fs.readFileSync(f) : Buffer.alloc(0))),
  );
}

/**
 * `vm logs -f`: prints what is new since the last poll, reading only that (an offset in
 * the open file), and follows a rotation: when `file` is a new file, the rest of the old
 * one (now `file.1`, still open here) is read to its end first.
 */
export class LogFollower {
  private fd: number | null = null;
  private ino = -1;
  private offset = 0;
  private readonly buf = Buffer.alloc(64 * 1024);

  constructor(
    private readonly file: string,
    private readonly out: (chunk: Buffer) => void,
  ) {}

  /** Prints everything there is now; call again to print what came since. */
  poll(): void {
    if (this.fd === null) {
      if (!this.open()) return;
    }
    this.drain();
    const now = statIno(this.file);
    if (now !== null && now !== this.ino) {
      // Rotated: the old file may have got more before the rename; then start on the new one.
      this.drain();
      fs.closeSync(this.fd!);
      this.fd = null;
      // Rotated twice since the last poll: the middle file is complete, print it whole.
      const [older] = consoleFiles(this.file);
      if (statIno(older) !== this.ino && fs.existsSync(older)) this.out(fs.readFileSync(older));
      if (this.open(0)) this.drain();
    }
  }

  /** Opens the current file (first poll: just the current file, after the rotated half). */
  private open(offset?: number): boolean {
    try {
      this.fd = fs.openSync(this.file, "r");
    } catch {
      return false;
    }
    this.ino = fs.fstatSync(this.fd).ino;
    if (offset === undefined) {
      const [older] = consoleFiles(this.file);
      if (fs.existsSync(older)) this.out(fs.readFileSync(older));
      this.offset = 0;
    } else this.offset = offset;
    return true;
  }

  private drain(): void {
    for (;;) {
      const n = fs.readSync(this.fd!, this.buf, 0, this.buf.length, this.offset);
      if (n <= 0) return;
      this.offset += n;
      this.out(Buffer.from(this.buf.subarray(0, n)));
    }
  }

  close(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
  }
}

/** Where the console log ended before a boot: what is after it is that boot's output. */
export interface ConsoleMark {
  ino: number;
  size: number;
}

/** The console log's current end (null when there is no log yet: everything will be new). */
export function consoleMark(file: string): ConsoleMark | null {
  try {
    const st = fs.statSync(file);
    return { ino: st.ino, size: st.size };
  } catch {
    return null;
  }
}

/** How much of a console a boot error quotes. */
export const CONSOLE_TAIL_LINES = 20;
export const CONSOLE_TAIL_BYTES = 4096;

/**
 * The last lines the guest printed (since `since`, when given: an earlier boot's output is
 * not this boot's reason), at most `maxLines` lines of the last `maxBytes` bytes, with
 * control characters escaped: guest text, quoted in an error message. Empty when there is none.
 */
export function consoleTail(
  file: string,
  since: ConsoleMark | null,
  maxLines = CONSOLE_TAIL_LINES,
  maxBytes = CONSOLE_TAIL_BYTES,
): string {
  const parts: Buffer[] = [];
  let need = maxBytes;
  let cut = false;
  // Newest first: the current file, then the rotated half.
  for (const f of [file, consoleFiles(file)[0]]) {
    if (need <= 0) break;
    let fd: number;
    try {
      fd = fs.openSync(f, "r");
    } catch {
      continue;
    }
    try {
      const st = fs.fstatSync(fd);
      const marked = since !== null && st.ino === since.ino;
      const from = marked ? Math.min(since.size, st.size) : 0;
      const start = Math.max(from, st.size - need);
      cut = start > from;
      const buf = Buffer.alloc(st.size - start);
      const n = buf.length > 0 ? fs.readSync(fd, buf, 0, buf.length, start) : 0;
      parts.unshift(buf.subarray(0, n));
      need -= n;
      // What is older than the mark is an earlier boot's.
      if (marked) break;
    } finally {
      fs.closeSync(fd);
    }
  }
  let text = Buffer.concat(parts).toString("utf8").replace(/\r/g, "");
  // Cut mid-line: the first, partial line is dropped.
  if (cut && text.includes("\n")) text = text.slice(text.indexOf("\n") + 1);
  const lines = text.split("\n");
  while (lines.length > 0 && lines.at(-1)!.trim() === "") lines.pop();
  return visibleLines(lines.slice(-maxLines).join("\n"));
}

function statIno(file: string): number | null {
  try {
    return fs.statSync(file).ino;
  } catch {
    return null;
  }
}

/**
 * The daemon's side of every QEMU console socket: one connection per running VM, each
 * writing a RotatingLog. QEMU drops console output while nobody is connected (a daemon
 * restart), and waits for the reader when it falls behind, so a guest that prints
 * without end costs the host at most the log's bound.
 */
export class ConsoleRecorders {
  private readonly open = new Map<string, Recorder>();
  private readonly endListeners = new Set<(key: string) => void>();

  constructor(private readonly log?: { error(obj: object, msg: string): void }) {}

  /**
   * Calls `listener` with the key of each recorder whose VMM ended the connection (it exited:
   * the kernel closed its end), never for a detach of ours. Returns the unsubscribe.
   */
  onEnd(listener: (key: string) => void): () => void {
    this.endListeners.add(listener);
    return () => this.endListeners.delete(listener);
  }

  /** Connects (bounded) to `socketPath` and records into `file`; replaces an earlier recorder for `key`. */
  async attach(key: string, socketPath: string, file: string, maxBytes: number): Promise<void> {
    this.detach(key);
    const socket = await connectBounded(socketPath, 10_000);
    let log: RotatingLog;
    try {
      log = new RotatingLog(file, maxBytes);
    } catch (err) {
      // Without a log there is nothing to record into; the socket must not linger unhandled.
      socket.destroy();
      throw err;
    }
    let markEnded = () => {};
    const ended = new Promise<void>((resolve) => (markEnded = resolve));
    const entry: Recorder = { socket, log, ended, markEnded };
    this.open.set(key, entry);
    socket.on("data", (chunk: Buffer) => {
      try {
        log.write(chunk);
      } catch (err) {
        // A full disk or a removed directory ends the recording, not the daemon.
        this.log?.error({ err, file }, "console log write failed");
        this.detach(key);
      }
    });
    const end = () => {
      if (this.open.get(key) !== entry) return;
      this.detach(key);
      for (const listener of this.endListeners) listener(key);
    };
    // "end" follows the last "data": everything the VMM wrote is in the log by then.
    socket.on("end", end);
    socket.on("close", end);
    socket.on("error", end);
    // The daemon may exit with VMs running: a console connection does not keep it alive.
    socket.unref();
  }

  /**
   * The VMM has exited: resolves once its last console bytes are in the log (the connection
   * ended, or was detached), or after `timeoutMs`, whichever is first.
   */
  async whenEnded(key: string, timeoutMs: number): Promise<void> {
    const entry = this.open.get(key);
    if (!entry) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      entry.ended,
      new Promise<void>((r) => (timer = setTimeout(r, timeoutMs))),
    ]).finally(() => clearTimeout(timer));
  }

  detach(key: string): void {
    const entry = this.open.get(key);
    if (!entry) return;
    this.open.delete(key);
    entry.socket.destroy();
    try {
      entry.log.close();
    } catch {
      // already closed
    }
    entry.markEnded();
  }

  closeAll(): void {
    for (const key of [...this.open.keys()]) this.detach(key);
  }
}

interface Recorder {
  socket: net.Socket;
  log: RotatingLog;
  /** Settles when the recording stops (the VMM's end, or a detach). */
  ended: Promise<void>;
  markEnded: () => void;
}

async function connectBounded(socketPath: string, timeoutMs: number): Promise<net.Socket> {
  const deadline = Date.now() + timeoutMs;
  let last: Error | null = null;
  while (Date.now() < deadline) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.createConnection(socketPath);
        s.once("connect", () => {
          s.removeAllListeners("error");
          resolve(s);
        });
        s.once("error", reject);
      });
    } catch (err) {
      last = err as Error;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`console socket ${socketPath}: ${last?.message ?? "timed out"}`);
}
