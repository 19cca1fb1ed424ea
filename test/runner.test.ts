import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import {
  createCommandRunner,
  MAX_OUTPUT_BYTES_CEILING,
  OutputTooLargeError,
  outputCap,
  runChecked,
} from "../src/system/runner.js";

const runner = createCommandRunner();

test("runs commands and reports status and output", async () => {
  assert.equal((await runner.run("true", [])).code, 0);
  assert.equal((await runner.run("false", [])).code, 1);
  const r = await runner.run("sh", ["-c", "echo out; echo err >&2; exit 3"]);
  assert.deepEqual([r.code, r.stdout, r.stderr], [3, "out\n", "err\n"]);
  assert.equal((await runner.run("cat", [], { input: "piped" })).stdout, "piped");
});

test("large output arrives whole", async () => {
  const r = await runner.run("seq", ["1", "200000"]);
  const lines = r.stdout.trim().split("\n");
  assert.deepEqual([lines.length, lines.at(-1)], [200000, "200000"]);
});

// Each case below would take the full 30 s sleep if the runner waited for it: the test's own
// timeout (shorter) catches that; the assertions are about outcomes, never elapsed time.
const PROMPT = { timeout: 20_000 };

test("a timeout kills the child", PROMPT, async () => {
  const r = await runner.run("sleep", ["30"], { timeoutMs: 200 });
  assert.deepEqual([r.timedOut, r.signal, r.code], [true, "SIGKILL", null]);
});

test("a missing tool is a clear error pointing at doctor", async () => {
  await assert.rejects(runner.run("banger-no-such-tool", []), (err: unknown) => {
    assert.ok(err instanceof BangerError);
    assert.equal(err.code, ErrorCode.Precondition);
    assert.equal(err.message, "banger-no-such-tool is not installed");
    assert.match(err.hint ?? "", /banger doctor/);
    return true;
  });
});

test("which finds sbin tools even when PATH lacks sbin", async () => {
  const narrow = createCommandRunner({ PATH: "/usr/bin:/bin" });
  assert.match((await narrow.which("mkfs.ext4")) ?? "", /sbin\/mkfs\.ext4$/);
});

test("runChecked names the command, status and stderr tail", async () => {
  await assert.rejects(
    runChecked(runner, "sh", ["-c", "echo nope >&2; exit 4"]),
    /sh exited with status 4:\nnope/,
  );
});

test(
  "a child that exits leaving a background grandchild on its pipes settles without waiting for it",
  PROMPT,
  async () => {
    const r = await runner.run("sh", ["-c", "echo before; sleep 30 & echo $!; exit 0"]);
    const [before, grandchild] = r.stdout.trim().split("\n");
    // Settled while the grandchild still holds the pipes: the runner did not wait for it.
    const stillThere = !(await processGone(Number(grandchild), 1));
    process.kill(Number(grandchild), "SIGKILL");
    assert.equal(stillThere, true, "the grandchild was still running when the call settled");
    assert.deepEqual([r.code, r.timedOut, before], [0, false, "before"]);
  },
);

// The shell writes its background sleep's pid to a file, then waits for it: the sleep is a
// grandchild holding the pipes, which only a kill of the whole process group ends.
const SLEEPING_GRANDCHILD = 'sleep 30 & echo $! >"$1.tmp" && mv "$1.tmp" "$1"; wait';

test("a timeout kills the child's whole process group", PROMPT, async () => {
  await withTempDir(async (dir) => {
    const pidFile = path.join(dir, "pid");
    const r = await runner.run("sh", ["-c", SLEEPING_GRANDCHILD, "sh", pidFile], {
      timeoutMs: 1000,
    });
    assert.deepEqual([r.timedOut, r.signal], [true, "SIGKILL"]);
    const grandchild = Number(await fs.readFile(pidFile, "utf8"));
    assert.equal(await processGone(grandchild), true, "the grandchild outlived the timeout");
  });
});

test("an abort kills the child's whole process group", PROMPT, async () => {
  await withTempDir(async (dir) => {
    const pidFile = path.join(dir, "pid");
    const abort = new AbortController();
    const pending = runner.run("sh", ["-c", SLEEPING_GRANDCHILD, "sh", pidFile], {
      signal: abort.signal,
    });
    const grandchild = Number(await waitForFile(pidFile));
    abort.abort();
    const r = await pending;
    assert.deepEqual([r.timedOut, r.signal], [false, "SIGKILL"]);
    assert.equal(await processGone(grandchild), true, "the grandchild outlived the abort");
  });
});

test("a missing working directory is a clear error naming it", async () => {
  await assert.rejects(
    runner.run("true", [], { cwd: "/nonexistent/banger-cwd" }),
    (err: unknown) => {
      assert.ok(err instanceof BangerError);
      assert.match(err.message, /\/nonexistent\/banger-cwd/);
      assert.doesNotMatch(err.message, /ENOENT/);
      return true;
    },
  );
});

test("runChecked reports a timeout as a timeout, not as a kill", async () => {
  await assert.rejects(runChecked(runner, "sleep", ["30"], { timeoutMs: 200 }), (err: unknown) => {
    assert.ok(err instanceof BangerError);
    assert.match(err.message, /^sleep timed out after 0\.2 s/);
    assert.doesNotMatch(err.message, /SIGKILL/);
    return true;
  });
});

test("an already-aborted signal does not start the command", async () => {
  await withTempDir(async (dir) => {
    const marker = path.join(dir, "ran");
    const abort = new AbortController();
    abort.abort();
    await assert.rejects(
      runner.run("touch", [marker], { signal: abort.signal }),
      (err: unknown) => err instanceof BangerError && err.code === ErrorCode.Cancelled,
    );
    await assert.rejects(fs.access(marker));
  });
});

test("every stderr line reaches onStderrLine, including a last one without a newline", async () => {
  const lines: string[] = [];
  await runner.run("sh", ["-c", "printf 'one\\ntwo\\nlast' >&2"], {
    onStderrLine: (line) => lines.push(line),
  });
  assert.deepEqual(lines, ["one", "two", "last"]);
});

test("onStdoutLine gets stdout's lines, onStderrLine stderr's, each the last one too", async () => {
  const out: string[] = [];
  const err: string[] = [];
  const r = await runner.run(
    "sh",
    ["-c", "echo out1; echo err1 >&2; printf 'out2'; printf 'err2' >&2"],
    {
      onStdoutLine: (line) => out.push(line),
      onStderrLine: (line) => err.push(line),
    },
  );
  assert.deepEqual(out, ["out1", "out2"]);
  assert.deepEqual(err, ["err1", "err2"]);
  assert.equal(r.stdout, "out1\nout2", "stdout is still collected whole");
});

test(
  "output past the default cap kills the command and rejects clearly, without crashing",
  PROMPT,
  async () => {
    // 600 MB: buffered whole, toString would throw inside the close handler and take the process down.
    await withTempDir(async (dir) => {
      const pidFile = path.join(dir, "pid");
      const script = 'echo $$ >"$1"; exec head -c 600000000 /dev/zero';
      await assert.rejects(runner.run("sh", ["-c", script, "sh", pidFile]), (err: unknown) => {
        assert.ok(err instanceof OutputTooLargeError);
        assert.equal(err.stream, "stdout");
        assert.match(err.message, /^sh printed more than 8 MiB on stdout: output too large/);
        return true;
      });
      const head = Number(await fs.readFile(pidFile, "utf8"));
      assert.equal(await processGone(head), true, "the command was killed, not left writing");
    });
  },
);

test(
  "a per-call cap applies to stderr too, and kills the whole process group",
  PROMPT,
  async () => {
    await withTempDir(async (dir) => {
      const pidFile = path.join(dir, "pid");
      const script = `${SLEEPING_GRANDCHILD.replace("; wait", "")}; yes banger >&2`;
      await assert.rejects(
        runner.run("sh", ["-c", script, "sh", pidFile], { maxOutputBytes: 64 * 1024 }),
        (err: unknown) =>
          err instanceof OutputTooLargeError &&
          err.stream === "stderr" &&
          /more than 64 KiB on stderr/.test(err.message),
      );
      const grandchild = Number(await fs.readFile(pidFile, "utf8"));
      assert.equal(await processGone(grandchild), true, "the grandchild outlived the cap");
    });
  },
);

test("output within the cap arrives whole; caps are bounded", async () => {
  const r = await runner.run("head", ["-c", "65536", "/dev/zero"], { maxOutputBytes: 65536 });
  assert.equal(r.stdout.length, 65536);
  assert.equal(outputCap(2 ** 40), MAX_OUTPUT_BYTES_CEILING);
  assert.equal(outputCap(0), 1);
  assert.equal(outputCap(Number.NaN), 1);
});

test("onStderrLine gets an endless line in pieces, and its own failure does not escape", async () => {
  const lengths: number[] = [];
  const r = await runner.run("sh", ["-c", "head -c 300000 /dev/zero | tr '\\0' x >&2; echo ok"], {
    onStderrLine: (line) => {
      lengths.push(line.length);
      throw new Error("a broken progress callback");
    },
  });
  assert.equal(r.stdout, "ok\n");
  assert.ok(Math.max(...lengths) <= 64 * 1024, `a line of ${Math.max(...lengths)} chars`);
  assert.equal(
    lengths.reduce((a, b) => a + b, 0),
    300000,
  );
});

/** Polls (bounded) until the process is gone; a zombie awaiting its reaper counts as gone. */
async function processGone(pid: number, polls = 100): Promise<boolean> {
  for (let i = 0; i < polls; i++) {
    const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8").catch(() => "");
    // The state is the first field after the ')' that ends the command name.
    if (!stat || stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-runner-"));
  try {
    await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

async function waitForFile(file: string): Promise<string> {
  for (let i = 0; i < 300; i++) {
    const text = await fs.readFile(file, "utf8").catch(() => undefined);
    if (text !== undefined) return text;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${file} never appeared`);
}
