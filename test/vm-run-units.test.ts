import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { Writable } from "node:stream";
import { BangerError, ErrorCode, type ErrorCodeValue } from "../src/api/errors.js";
import type { DaemonClient } from "../src/cli/client.js";
import type { CliDeps } from "../src/cli/context.js";
import { remoteCommand } from "../src/guest/image-env.js";
import { runVm, splitRunOperands, type RunOptions } from "../src/cli/vm-run.js";
import { tempLayout } from "./helpers/temp-home.js";

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

/** A daemon stand-in that records calls: the clean-up rules of `vm run` are CLI-side. */
function fakeDaemon(script: {
  create: (name: string) => unknown;
  exists: (name: string) => boolean;
  state?: string;
}) {
  const calls: Array<[string, Record<string, unknown>]> = [];
  const client = {
    async call(method: string, params: Record<string, unknown>) {
      calls.push([method, params]);
      if (method === "vm.create") return script.create(params.name as string);
      if (method === "vm.show") {
        if (script.exists(params.name as string))
          return { name: params.name, state: script.state ?? "running" };
        throw new BangerError(ErrorCode.NotFound, "no such VM");
      }
      if (method === "vm.delete") return { deleted: params.names };
      throw new Error(`unexpected ${method}`);
    },
    close() {},
  };
  return { calls, client: client as unknown as DaemonClient };
}

async function runWith(
  daemon: ReturnType<typeof fakeDaemon>,
  opts: RunOptions,
): Promise<{ err: unknown; stderr: string }> {
  const home = await tempLayout();
  let stderr = "";
  const sink = (fn: (s: string) => void) =>
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        fn(chunk.toString());
        cb();
      },
    });
  const deps: CliDeps = {
    out: { stdout: sink(() => {}), stderr: sink((s) => (stderr += s)) },
    env: home.env,
    layout: home.layout,
    version: "test",
    host: { cpus: 2, memoryBytes: 4 * 2 ** 30 },
    connect: async () => daemon.client,
    tryConnect: async () => daemon.client,
    startDaemon: async () => 0,
  };
  try {
    await runVm(deps, { path: null, cmd: ["true"] }, opts, { stdinIsTTY: false });
    return { err: null, stderr };
  } catch (err) {
    return { err, stderr };
  } finally {
    await home.cleanup();
  }
}

/** A boot failure as the daemon gives it: the console's last lines in the message, a hint naming the VM. */
function bootFailure(code: ErrorCodeValue, name: string): BangerError {
  return new BangerError(
    code,
    `VM ${name} stopped while booting: its VMM exited before SSH answered; its console's last lines:\n  | Kernel panic - not syncing: VFS: Unable to mount root fs`,
    `'banger vm logs ${name}' shows its whole console; 'banger vm start ${name}' tries again, 'banger vm delete ${name}' removes it`,
  );
}

for (const [what, code, state] of [
  ["SSH never came up", ErrorCode.SshTimeout, "running"],
  ["the VMM exited during boot", ErrorCode.BootFailed, "stopped"],
] as const) {
  test(`--rm deletes a VM whose boot failed (${what}); the error quotes its console and names no deleted VM`, async () => {
    const daemon = fakeDaemon({
      create: (name) => {
        throw bootFailure(code, name);
      },
      exists: () => true,
      state,
    });
    const { err, stderr } = await runWith(daemon, { rm: true, name: "panicky" });
    assert.ok(err instanceof BangerError && err.code === code);
    assert.deepEqual(
      daemon.calls.filter(([m]) => m === "vm.delete").map(([, p]) => p),
      [{ names: ["panicky"] }],
    );
    assert.match(err.message, /\| Kernel panic - not syncing/, "the reason is in the error");
    assert.doesNotMatch(err.hint ?? "", /panicky/, `the hint points at a deleted VM: ${err.hint}`);
    assert.match(err.hint ?? "", /deleted \(--rm\)/);
    assert.doesNotMatch(stderr, /is kept/);
  });

  test(`without --rm a VM whose boot failed (${what}) is kept (${state}), for 'vm logs'`, async () => {
    const daemon = fakeDaemon({
      create: (name) => {
        throw bootFailure(code, name);
      },
      exists: () => true,
      state,
    });
    const { err, stderr } = await runWith(daemon, { name: "panicky" });
    assert.ok(err instanceof BangerError && err.code === code);
    assert.equal(daemon.calls.filter(([m]) => m === "vm.delete").length, 0);
    assert.match(err.hint ?? "", /'banger vm logs panicky'/, "the VM exists: the hint stays");
    assert.match(
      stderr,
      new RegExp(
        `vm panicky is kept \\(${state}\\) so you can see why: 'banger vm logs panicky'; delete it with`,
      ),
    );
  });
}

test("--rm deletes a VM whose create failed after it existed", async () => {
  const daemon = fakeDaemon({
    create: () => {
      throw new BangerError(ErrorCode.Internal, "VM crashed while booting");
    },
    exists: () => true,
  });
  const { err } = await runWith(daemon, { rm: true, name: "crashy" });
  assert.ok(err instanceof BangerError && /crashed/.test(err.message));
  assert.deepEqual(
    daemon.calls.filter(([m]) => m === "vm.delete").map(([, p]) => p),
    [{ names: ["crashy"] }],
  );
});

test("a generated name that is taken is replaced; a given one is the user's error", async () => {
  let creates = 0;
  const taken = fakeDaemon({
    create: () => {
      creates++;
      throw new BangerError(ErrorCode.AlreadyExists, "taken");
    },
    exists: () => true,
  });
  const given = await runWith(taken, { rm: true, name: "mine" });
  assert.ok(given.err instanceof BangerError && given.err.code === ErrorCode.AlreadyExists);
  assert.equal(creates, 1);
  // Nothing of someone else's VM "mine" is touched.
  assert.equal(taken.calls.filter(([m]) => m === "vm.delete" || m === "vm.show").length, 0);
  creates = 0;
  const generated = await runWith(taken, { rm: true });
  // After the retries the last refusal is the error, as the daemon gave it.
  assert.ok(
    generated.err instanceof BangerError && generated.err.code === ErrorCode.AlreadyExists,
    String(generated.err),
  );
  assert.equal(creates, 6, "five retries with fresh names");
  const names = new Set(taken.calls.filter(([m]) => m === "vm.create").map(([, p]) => p.name));
  assert.ok(names.size > 1, "each retry picks a new name");
});
