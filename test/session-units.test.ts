import assert from "node:assert/strict";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { LineEditor, parseTail, parseTimeout } from "../src/cli/vm-session.js";
import { SessionService } from "../src/daemon/session-service.js";
import { sessionError } from "../src/guest/sessions.js";
import type { GuestTarget } from "../src/guest/ssh.js";
import type { CommandResult, CommandRunner, RunOptions } from "../src/system/runner.js";

const target: GuestTarget = {
  vmId: "abc123",
  vmName: "dev",
  host: "127.0.0.1",
  port: 2222,
  identity: { privateKey: "/k", publicKey: "/k.pub", knownHosts: "/kh" },
};

/** A service whose SSH calls answer from `reply`; records calls and lock kinds. */
function fakeService(reply: (remote: string, opts: RunOptions) => Partial<CommandResult>) {
  const calls: Array<{ cmd: string; args: string[]; opts: RunOptions }> = [];
  const locks: string[] = [];
  const runner: CommandRunner = {
    which: async (cmd) => cmd,
    run: async (cmd, args, opts = {}) => {
      calls.push({ cmd, args, opts });
      return { code: 0, signal: null, stdout: "", stderr: "", ...reply(args.at(-1)!, opts) };
    },
  };
  const service = new SessionService({
    runner,
    vms: {
      guestTarget: async (name) => {
        if (name !== "dev")
          throw new BangerError(ErrorCode.InvalidState, `VM ${name} is not running`);
        return target;
      },
      exclusive: async (kind, vmId, fn) => {
        locks.push(`${kind}@${vmId}`);
        return fn();
      },
    },
  });
  return { service, calls, locks };
}

const record = "web\trunning\t42\t\t2025-01-01T00:00:00Z\t/root\tnpm run dev\n";

test("start validates before any SSH, then runs the script over SSH under a per-session lock", async () => {
  const { service, calls, locks } = fakeService(() => ({ stdout: record }));
  await assert.rejects(service.start("dev", "Bad", ["x"], undefined), /invalid session name/);
  await assert.rejects(service.start("dev", "web", [], undefined), /no command to start/);
  await assert.rejects(service.start("dev", "web", ["x"], "/a\nb"), /invalid --cwd/);
  assert.equal(calls.length, 0);

  const s = await service.start("dev", "web", ["npm", "run", "dev"], undefined);
  assert.deepEqual(s, {
    name: "web",
    state: "running",
    pid: 42,
    exitCode: null,
    startedAt: "2025-01-01T00:00:00Z",
    cwd: "/root",
    command: "npm run dev",
  });
  assert.deepEqual(locks, ["session:web@abc123"]);
  const [call] = calls;
  assert.equal(call?.cmd, "ssh");
  assert.ok(call.args.includes("root@127.0.0.1") && call.args.includes("BatchMode=yes"));
  const remote = call.args.at(-1)!;
  assert.match(remote, /^sh -c '/);
  assert.match(remote, / banger-session start \/root\/\.banger\/sessions web 8388608 \/root /);
  assert.match(remote, / npm run dev$/);
});

test("send writes the text exactly on the SSH stdin; logs decode base64", async () => {
  const { service, calls } = fakeService((remote) =>
    remote.includes(" logs ")
      ? { stdout: Buffer.from([0xff, 0x00, 0x41]).toString("base64") + "\n" }
      : {},
  );
  assert.deepEqual(await service.send("dev", "web", "héllo\n"), { name: "web", bytes: 7 });
  assert.equal((calls[0]?.opts.input as Buffer).toString("utf8"), "héllo\n");
  const logs = await service.logs("dev", "web", undefined);
  assert.deepEqual(logs, { name: "web", data: "/wBB", bytes: 3 });
  assert.match(calls[1]!.args.at(-1)!, / logs \/root\/\.banger\/sessions web 8388608$/);
});

test("stop's SSH bound outlasts its SIGTERM deadline", async () => {
  const { service, calls } = fakeService(() => ({
    stdout: "web\texited\t42\t143\t2025-01-01T00:00:00Z\t/root\tx\n",
  }));
  const s = await service.stop("dev", "web", 45_000);
  assert.equal(s.exitCode, 143);
  assert.match(calls[0]!.args.at(-1)!, / stop \/root\/\.banger\/sessions web 450$/);
  assert.ok((calls[0]!.opts.timeoutMs ?? 0) > 45_000);
});

test("a VM that is not running fails before SSH", async () => {
  const { service, calls } = fakeService(() => ({}));
  await assert.rejects(service.list("stopped"), /VM stopped is not running/);
  assert.equal(calls.length, 0);
});

test("script errors become errors with a next step", () => {
  const fail = (kind: string, message: string) => ({
    code: 3,
    signal: null,
    stderr: `banger-session: ${kind}: ${message}\n`,
  });
  const cases: Array<[ReturnType<typeof fail>, number, RegExp]> = [
    [fail("notfound", "no session named 'x'"), ErrorCode.NotFound, /session list dev/],
    [fail("exists", "session 'x' is already running"), ErrorCode.AlreadyExists, /stop it first/],
    [fail("state", "session 'x' is not running (exited)"), ErrorCode.InvalidState, /how it ended/],
    [fail("nocmd", "'y' is not an executable command"), ErrorCode.InvalidParams, /full path/],
    [fail("nocwd", "no directory '/z'"), ErrorCode.InvalidParams, /--cwd/],
    [fail("precondition", "setsid is not installed"), ErrorCode.Precondition, /busybox/],
  ];
  for (const [r, code, hint] of cases) {
    const e = sessionError("dev", "x", r);
    assert.equal(e.code, code, r.stderr);
    assert.match(e.hint ?? "", hint);
  }
  const unreachable = sessionError("dev", "x", {
    code: 255,
    signal: null,
    stderr: "ssh: connect to host 127.0.0.1 port 2222: Connection refused\n",
  });
  assert.match(unreachable.message, /could not reach VM dev over SSH: .*Connection refused/);
  assert.match(unreachable.hint ?? "", /vm health dev/);
  const crashed = sessionError("dev", "x", { code: 2, signal: null, stderr: "sh: 1: boom\n" });
  assert.equal(crashed.code, ErrorCode.Internal);
  assert.match(crashed.message, /exited with status 2:\nsh: 1: boom/);
});

test("stop --timeout takes seconds; --tail takes bytes", () => {
  assert.equal(parseTimeout("10"), 10_000);
  assert.equal(parseTimeout("2.5"), 2500);
  assert.equal(parseTimeout("30s"), 30_000);
  for (const bad of ["0", "-1", "soon", "", "7200"])
    assert.throws(() => parseTimeout(bad), /invalid --timeout/, bad);
  assert.equal(parseTail("4096"), 4096);
  for (const bad of ["0", "1.5", "lots"]) assert.throws(() => parseTail(bad), /invalid --tail/);
});

test("attach edits the line locally, sends it on Enter, and detaches on Ctrl-]", () => {
  const ed = new LineEditor();
  assert.deepEqual(ed.feed("pinx"), { send: "", echo: "pinx", detach: false });
  assert.deepEqual(ed.feed("\x7fg\r"), { send: "ping\n", echo: "\b \bg\n", detach: false });
  assert.deepEqual(ed.feed("héllo\x7f\x7f\x7f\x7fi\n"), {
    send: "hi\n",
    echo: "héllo\b \b\b \b\b \b\b \bi\n",
    detach: false,
  });
  assert.deepEqual(ed.feed("drop\x03"), { send: "", echo: "drop^C\n", detach: false });
  assert.deepEqual(ed.feed("part\x04"), { send: "part", echo: "part", detach: false });
  assert.deepEqual(ed.feed("a\rb\x1dc"), { send: "a\n", echo: "a\nb", detach: true });
  // Arrow keys and other escape sequences are dropped.
  const fresh = new LineEditor();
  assert.deepEqual(fresh.feed("\x1b[A\x1b[1;5Dok\x1bOA\x7f\r"), {
    send: "o\n",
    echo: "ok\b \b\n",
    detach: false,
  });
});
