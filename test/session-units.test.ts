import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { LineEditor, parseTail, parseTimeout } from "../src/cli/vm-session.js";
import { SessionService } from "../src/daemon/session-service.js";
import { displayCommand, sessionError } from "../src/guest/sessions.js";
import type { GuestTarget } from "../src/guest/ssh.js";
import {
  createCommandRunner,
  type CommandResult,
  type CommandRunner,
  type RunOptions,
} from "../src/system/runner.js";
import { isPidAlive } from "../src/vmm/process.js";

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
  return { service: serviceOver(runner, locks), calls, locks };
}

function serviceOver(runner: CommandRunner, locks: string[], guestDir?: string): SessionService {
  return new SessionService({
    runner,
    ...(guestDir ? { guestDir } : {}),
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
}

/**
 * A guest that is this host's own shell: the remote command banger gives ssh runs under
 * the real `sh`, against a temp sessions dir. What comes back is what banger's command did.
 */
async function localGuest() {
  const calls: Array<{ cmd: string; args: string[]; opts: RunOptions }> = [];
  const locks: string[] = [];
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-session-units-"));
  const real = createCommandRunner();
  const runner: CommandRunner = {
    which: async (cmd) => cmd,
    run: async (cmd, args, opts = {}) => {
      calls.push({ cmd, args, opts });
      assert.equal(cmd, "ssh");
      return real.run("sh", ["-c", args.at(-1)!], opts);
    },
  };
  const sessions = path.join(dir, "sessions");
  return {
    service: serviceOver(runner, locks, sessions),
    calls,
    locks,
    dir,
    async cleanup() {
      for (const name of await fs.readdir(sessions).catch(() => [] as string[])) {
        const pid = Number(
          await fs.readFile(path.join(sessions, name, "pid"), "utf8").catch(() => ""),
        );
        try {
          if (pid > 1) process.kill(-pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Bounded polling of a session's state. */
async function until<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  for (let i = 0; i < 200; i++) {
    const v = await get();
    if (ok(v)) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test("start validates before any SSH, then runs the script over SSH under a per-session lock", async () => {
  const { service, calls } = fakeService(() => ({}));
  await assert.rejects(service.start("dev", "Bad", ["x"], undefined), /invalid session name/);
  await assert.rejects(service.start("dev", "web", [], undefined), /no command to start/);
  await assert.rejects(service.start("dev", "web", ["x"], "/a\nb"), /invalid --cwd/);
  await assert.rejects(service.start("dev", "web", ["x"], ""), /invalid --cwd/);
  assert.equal(calls.length, 0);

  // The default cwd ('' : the image's WorkingDir, else /root, decided in the guest), the
  // default sessions dir and the cap are on the command line; a guest
  // that answers no record is an error that says so.
  await assert.rejects(
    service.start("dev", "web", ["npm", "run", "dev"], undefined),
    /session web in dev gave no state/,
  );
  const remote = calls[0]!.args.at(-1)!;
  assert.match(remote, /^sh -c '/);
  assert.match(remote, / banger-session start \/root\/\.banger\/sessions web 8388608 '' /);
  assert.match(remote, / npm run dev$/);

  const guest = await localGuest();
  try {
    const argv = ["sh", "-c", 'echo "it\'s $1"; sleep 30', "x", "a b"];
    const s = await guest.service.start("dev", "web", argv, guest.dir);
    assert.deepEqual(guest.locks, ["session:web@abc123"]);
    const [call] = guest.calls;
    assert.ok(call!.args.includes("root@127.0.0.1") && call!.args.includes("BatchMode=yes"));
    // What the real script made of banger's command: the session runs, as given, where given.
    assert.equal(s.name, "web");
    assert.equal(s.state, "running");
    assert.equal(s.command, displayCommand(argv));
    assert.equal(s.cwd, await fs.realpath(guest.dir));
    assert.ok(s.pid && isPidAlive(s.pid), "the command runs");
    const logs = await until(
      "the command's output",
      () => guest.service.logs("dev", "web", undefined),
      (l) => l.bytes > 0,
    );
    assert.equal(Buffer.from(logs.data, "base64").toString(), "it's a b\n");
    const killed = await guest.service.kill("dev", "web");
    assert.deepEqual([killed.state, killed.exitCode], ["exited", 137]);
    assert.ok(!isPidAlive(s.pid), "kill ended it");
  } finally {
    await guest.cleanup();
  }
});

test("send writes the text exactly on the SSH stdin; logs decode base64", async () => {
  const guest = await localGuest();
  try {
    await guest.service.start(
      "dev",
      "web",
      ["sh", "-c", "printf '\\377\\000A'; while read -r l; do echo \"got:$l\"; done"],
      guest.dir,
    );
    assert.deepEqual(await guest.service.send("dev", "web", "héllo\n"), { name: "web", bytes: 7 });
    assert.equal((guest.calls[1]?.opts.input as Buffer).toString("utf8"), "héllo\n");
    const want = Buffer.concat([Buffer.from([0xff, 0x00, 0x41]), Buffer.from("got:héllo\n")]);
    const logs = await until(
      "the echo of what was sent",
      () => guest.service.logs("dev", "web", undefined),
      (l) => l.bytes >= want.length,
    );
    assert.deepEqual(logs, { name: "web", data: want.toString("base64"), bytes: want.length });
    assert.match(guest.calls.at(-1)!.args.at(-1)!, / logs \S+ web 8388608$/);
    const tail = await guest.service.logs("dev", "web", 4);
    assert.equal(Buffer.from(tail.data, "base64").toString(), "llo\n");
    await guest.service.kill("dev", "web");
  } finally {
    await guest.cleanup();
  }
});

test("stop's SSH bound outlasts its SIGTERM deadline", async () => {
  const guest = await localGuest();
  try {
    const started = await guest.service.start("dev", "web", ["sleep", "30"], guest.dir);
    const s = await guest.service.stop("dev", "web", 45_000);
    assert.deepEqual([s.state, s.exitCode], ["exited", 143], "SIGTERM ended it");
    assert.ok(!isPidAlive(started.pid!), "the command is gone");
    const call = guest.calls.at(-1)!;
    assert.match(call.args.at(-1)!, / stop \S+ web 450$/);
    assert.ok((call.opts.timeoutMs ?? 0) > 45_000);
  } finally {
    await guest.cleanup();
  }
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
