import assert from "node:assert/strict";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { createCommandRunner, runChecked } from "../src/system/runner.js";

const runner = createCommandRunner();

test("runs commands and reports status and output", async () => {
  assert.equal((await runner.run("true", [])).code, 0);
  assert.equal((await runner.run("false", [])).code, 1);
  const r = await runner.run("sh", ["-c", "echo out; echo err >&2; exit 3"]);
  assert.deepEqual([r.code, r.stdout, r.stderr], [3, "out\n", "err\n"]);
  assert.equal((await runner.run("cat", [], { input: "piped" })).stdout, "piped");
});

test("a timeout kills the child promptly", async () => {
  const started = Date.now();
  const r = await runner.run("sleep", ["30"], { timeoutMs: 200 });
  assert.equal(r.signal, "SIGKILL");
  assert.ok(Date.now() - started < 10_000);
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
