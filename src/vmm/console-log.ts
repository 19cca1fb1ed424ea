import fs from "node:fs";
import net from "node:net";

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
  private readonly open = new Map<string, { socket: net.Socket; log: RotatingLog }>();

  constructor(private readonly log?: { error(obj: object, msg: string): void }) {}

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
    const entry = { socket, log };
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
      if (this.open.get(key) === entry) this.detach(key);
    };
    socket.on("close", end);
    socket.on("error", end);
    // The daemon may exit with VMs running: a console connection does not keep it alive.
    socket.unref();
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
  }

  closeAll(): void {
    for (const key of [...this.open.keys()]) this.detach(key);
  }
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
