import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { BangerError } from "../src/api/errors.js";
import { remoteCommand, splitRunOperands } from "../src/cli/vm-run.js";

const run = promisify(execFile);

test("vm run operands split at the -- the user typed", () => {
  assert.deepEqual(splitRunOperands([], null), { path: null, cmd: [] });
  assert.deepEqual(splitRunOperands(["./repo"], null), { path: "./repo", cmd: [] });
  assert.deepEqual(splitRunOperands(["uname", "-a"], 0), { path: null, cmd: ["uname", "-a"] });
  assert.deepEqual(splitRunOperands(["./repo", "make", "test"], 1), {
    path: "./repo",
    cmd: ["make", "test"],
  });
  assert.throws(
    () => splitRunOperands(["./repo", "make"], null),
    (err: unknown) => err instanceof BangerError && /put the command after --/.test(err.hint ?? ""),
  );
  assert.throws(() => splitRunOperands(["a", "b", "c"], 2), /at most one path/);
});

/** Runs the guest script with the host's own sh (dash here), as sshd's shell would. */
async function sh(script: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run("sh", ["-c", script]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

test("the remote command keeps every argument whole and exits with the command's status", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger run dir "));
  try {
    await fs.writeFile(path.join(dir, "README.md"), "hi");
    const r = await sh(remoteCommand(dir, ["sh", "-c", "test -f README.md && exit 7"]));
    assert.equal(r.code, 7);
    const echo = await sh(remoteCommand(dir, ["printf", "%s|", "a b", "it's", "$HOME", "*"]));
    assert.equal(echo.stdout, "a b|it's|$HOME|*|");
    const pwd = await sh(remoteCommand(dir, ["pwd"]));
    assert.equal(pwd.stdout.trim(), dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test("a command that cannot start says so and exits 127", async () => {
  const r = await sh(remoteCommand("/", ["no-such-command-here", "x"]));
  assert.equal(r.code, 127);
  assert.match(r.stderr, /could not be started in the VM: no-such-command-here: not found/);
  const snippet = await sh(remoteCommand("/", ["make test && echo ok"]));
  assert.equal(snippet.code, 127);
  assert.match(snippet.stderr, /use: -- sh -c/);
  const missingDir = await sh(remoteCommand("/no/such/dir", ["true"]));
  assert.notEqual(missingDir.code, 0);
});
