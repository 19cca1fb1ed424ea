import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import {
  displayCommand,
  parseSessionError,
  parseSessionRecords,
  sessionArgv,
  validateSessionName,
  type SessionRecord,
  type SessionVerb,
} from "../src/guest/sessions.js";
import { loadGuestScripts } from "../src/guest/scripts.js";
import { isPidAlive } from "../src/vmm/process.js";
import { runScript as runArgv, type ScriptRun as Run } from "./helpers/run-script.js";

const scripts = loadGuestScripts();

// The guest script run by the host's real shells against a temp dir standing in for
// /root/.banger/sessions: dash (Debian's /bin/sh) and busybox sh (minimal OCI images).

function runScript(shell: string[], base: string, v: SessionVerb, input = ""): Promise<Run> {
  return runArgv(sessionArgv(scripts, shell, base, v), input);
}

// Each shell's sessions dir (<temp>/sessions, made by the script itself).
const sessionDirs: string[] = [];
after(async () => {
  // Kill whatever a failed test left running, then remove the temp dirs.
  for (const dir of sessionDirs) {
    for (const name of await fs.readdir(dir).catch(() => [] as string[])) {
      for (const f of ["pid", "supervisor"]) {
        const pid = Number(await fs.readFile(path.join(dir, name, f), "utf8").catch(() => ""));
        if (pid > 1) {
          try {
            process.kill(f === "pid" ? -pid : pid, "SIGKILL");
          } catch {
            // already gone
          }
        }
      }
    }
    await fs.rm(path.dirname(dir), { recursive: true, force: true });
  }
});

for (const shell of [["dash"], ["busybox", "sh"]]) {
  describe(`guest session script under ${shell.join(" ")}`, () => {
    let base = "";
    const sh = async (v: SessionVerb, input?: string) => runScript(shell, base, v, input);
    const ok = async (v: SessionVerb, input?: string) => {
      const r = await sh(v, input);
      assert.equal(r.code, 0, `${v.verb} failed: ${r.stderr}`);
      return r;
    };
    const one = async (v: SessionVerb): Promise<SessionRecord> => {
      const [rec] = parseSessionRecords((await ok(v)).stdout.toString());
      assert.ok(rec, `${v.verb} printed no record`);
      return rec;
    };
    const start = (name: string, command: string[], cwd = base) =>
      one({ verb: "start", name, capBytes: 1024 * 1024, cwd, command });
    const logs = async (name: string, tailBytes = 8 * 1024 * 1024) =>
      Buffer.from(
        (await ok({ verb: "logs", name, tailBytes })).stdout.toString().replace(/\s/g, ""),
        "base64",
      );
    const awaitState = async (name: string, state: string) => {
      for (let i = 0; i < 200; i++) {
        const rec = await one({ verb: "show", name });
        if (rec.state === state) return rec;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.fail(`session ${name} never became ${state}`);
    };
    const awaitLogs = async (name: string, pattern: RegExp) => {
      for (let i = 0; i < 200; i++) {
        if (pattern.test((await logs(name)).toString())) return;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.fail(`logs of ${name} never matched ${pattern}: ${(await logs(name)).toString()}`);
    };

    test("a fresh guest: no sessions dir lists nothing, and the first start makes the session's files", async () => {
      base = path.join(await fs.mkdtemp(path.join(os.tmpdir(), "banger-sessions-")), "sessions");
      sessionDirs.push(base);
      const empty = await ok({ verb: "list" });
      assert.equal(empty.stdout.toString(), "", "no sessions yet");
      await assert.rejects(fs.access(base), "list does not make the dir");

      const rec = await start("first", ["sh", "-c", "echo hi; exit 5"], path.dirname(base));
      assert.equal((await awaitState("first", "exited")).exitCode, 5);
      const dir = path.join(base, "first");
      assert.deepEqual((await fs.readdir(dir)).sort(), [
        "boot-id",
        "cmd",
        "cwd",
        "exit-code",
        "gen",
        "out.fifo",
        "output",
        "pid",
        "started-at",
        "stdin",
        "supervise.sh",
        "supervisor",
      ]);
      const read = (f: string) => fs.readFile(path.join(dir, f), "utf8");
      assert.equal(await read("cmd"), `${displayCommand(["sh", "-c", "echo hi; exit 5"])}\n`);
      assert.equal(await read("cwd"), `${await fs.realpath(path.dirname(base))}\n`);
      assert.equal((await read("pid")).trim(), String(rec.pid));
      assert.equal((await read("exit-code")).trim(), "5");
      assert.equal(await read("output"), "hi\n");
      assert.ok((await fs.stat(path.join(dir, "stdin"))).isFIFO(), "stdin is a FIFO");
      await fs.rm(dir, { recursive: true }); // the next test lists exactly its own sessions
    });

    test("start → list → show → send → logs → stop", async () => {
      const echo = ["sh", "-c", 'echo ready; while read -r l; do echo "got:$l"; done; echo eof'];
      const started = await start("echo", echo, "/tmp");
      assert.equal(started.state, "running");
      assert.ok(started.pid && isPidAlive(started.pid), "the command runs");
      assert.equal(started.cwd, await fs.realpath("/tmp"));
      assert.equal(started.command, displayCommand(echo));
      assert.match(started.startedAt ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

      const listed = parseSessionRecords((await ok({ verb: "list" })).stdout.toString());
      assert.deepEqual(
        listed.map((r) => [r.name, r.state]),
        [["echo", "running"]],
      );

      // Two sends: the command does not see EOF in between.
      await ok({ verb: "send", name: "echo" }, "hello world\n");
      await ok({ verb: "send", name: "echo" }, "second\n");
      await awaitLogs("echo", /ready\ngot:hello world\ngot:second\n/);
      assert.equal((await one({ verb: "show", name: "echo" })).state, "running");

      const stopped = await one({ verb: "stop", name: "echo", timeoutMs: 5000 });
      assert.equal(stopped.state, "exited");
      assert.equal(stopped.exitCode, 143, "SIGTERM");
      assert.ok(!isPidAlive(started.pid), "the command is gone");

      const notRunning = await sh({ verb: "send", name: "echo" }, "late\n");
      assert.equal(notRunning.code, 3);
      assert.deepEqual(parseSessionError(notRunning.stderr), {
        kind: "state",
        message: "session 'echo' is not running (exited)",
      });
    });

    test("a command's own exit code is kept, and an exited name can be reused", async () => {
      await start("short", ["sh", "-c", "echo first; exit 7"]);
      assert.equal((await awaitState("short", "exited")).exitCode, 7);
      assert.equal((await logs("short")).toString(), "first\n");
      const again = await start("short", ["sh", "-c", "echo second; exit 0"]);
      assert.notEqual(again.state, "lost");
      assert.equal((await awaitState("short", "exited")).exitCode, 0);
      assert.equal((await logs("short")).toString(), "second\n", "the old output is gone");
    });

    test("stop ends a process group that ignores SIGTERM with SIGKILL", async () => {
      const rec = await start("stubborn", [
        "sh",
        "-c",
        "trap '' TERM; echo armed; while :; do sleep 1; done",
      ]);
      await awaitLogs("stubborn", /armed/);
      const stopped = await one({ verb: "stop", name: "stubborn", timeoutMs: 300 });
      assert.equal(stopped.state, "exited");
      assert.equal(stopped.exitCode, 137, "SIGKILL");
      assert.ok(!isPidAlive(rec.pid!));
      // Its children (the sleep) went with the process group (once init has reaped them).
      for (let i = 0; i < 100 && isPidAlive(-rec.pid!); i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.ok(!isPidAlive(-rec.pid!), "nothing is left in the process group");
    });

    test("kill sends SIGKILL at once", async () => {
      await start("victim", ["sleep", "600"]);
      const killed = await one({ verb: "kill", name: "victim" });
      assert.equal(killed.state, "exited");
      assert.equal(killed.exitCode, 137);
      assert.ok(killed.pid && !isPidAlive(killed.pid), "the command is gone");
      for (let i = 0; i < 100 && isPidAlive(-killed.pid); i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.ok(!isPidAlive(-killed.pid), "nothing is left in the process group");
    });

    test("clear errors: running duplicate, missing command, missing cwd, unknown name", async () => {
      await start("dup", ["sleep", "600"]);
      const cases: Array<[SessionVerb, string, RegExp]> = [
        [
          { verb: "start", name: "dup", capBytes: 1 << 20, cwd: base, command: ["true"] },
          "exists",
          /session 'dup' is already running \(pid \d+\)/,
        ],
        [
          {
            verb: "start",
            name: "x",
            capBytes: 1 << 20,
            cwd: base,
            command: ["no-such-command-xyz"],
          },
          "nocmd",
          /'no-such-command-xyz' is not an executable command/,
        ],
        [
          { verb: "start", name: "y", capBytes: 1 << 20, cwd: "/no/such/dir", command: ["true"] },
          "nocwd",
          /no directory '\/no\/such\/dir'/,
        ],
        [{ verb: "show", name: "ghost" }, "notfound", /no session named 'ghost'/],
      ];
      for (const [v, kind, pattern] of cases) {
        const r = await sh(v);
        assert.equal(r.code, 3, r.stderr);
        const e = parseSessionError(r.stderr);
        assert.equal(e?.kind, kind, r.stderr);
        assert.match(e.message, pattern);
      }
      const names = parseSessionRecords((await ok({ verb: "list" })).stdout.toString()).map(
        (r) => r.name,
      );
      assert.ok(!names.includes("x") && !names.includes("y"), "failed starts leave nothing");
      await ok({ verb: "kill", name: "dup" });
    });

    test("a session without an exit code whose processes are gone, or from another boot, is lost", async () => {
      const rec = await start("orphan", ["sleep", "600"]);
      const dir = path.join(base, "orphan");
      const supervisor = Number(await fs.readFile(path.join(dir, "supervisor"), "utf8"));
      process.kill(supervisor, "SIGKILL");
      process.kill(-rec.pid!, "SIGKILL");
      await awaitState("orphan", "lost");

      await start("rebooted", ["sleep", "600"]);
      await fs.writeFile(path.join(base, "rebooted", "boot-id"), "another-boot\n");
      assert.equal((await one({ verb: "show", name: "rebooted" })).state, "lost");
      const pid = Number(await fs.readFile(path.join(base, "rebooted", "pid"), "utf8"));
      process.kill(-pid, "SIGKILL");
    });

    test("output is capped at the newest bytes", async () => {
      // ~3 MiB through a 1 MiB cap; the end must survive.
      await start("chatty", [
        "sh",
        "-c",
        "i=0; while [ $i -lt 3000 ]; do printf '%01023d\\n' $i; i=$((i+1)); done; echo THE-END",
      ]);
      await awaitState("chatty", "exited");
      const out = await logs("chatty");
      assert.ok(out.length <= 1024 * 1024, `kept ${out.length} bytes`);
      assert.ok(out.length >= 256 * 1024, `kept only ${out.length} bytes`);
      assert.match(out.toString(), /0*2999\nTHE-END\n$/);
      // Whole lines in order: nothing lost or duplicated inside what is kept.
      const lines = out.toString().trimEnd().split("\n").slice(1, -1).map(Number);
      for (let i = 1; i < lines.length; i++) assert.equal(lines[i], lines[i - 1]! + 1);
      const tail = await logs("chatty", 8);
      assert.equal(tail.toString(), "THE-END\n");
    });

    test("follow prints everything and ends when the session exits", async () => {
      await start("ticker", ["sh", "-c", "for i in 1 2 3 4 5; do echo tick$i; sleep 0.2; done"]);
      const r = await ok({ verb: "follow", name: "ticker" });
      assert.equal(r.stdout.toString(), "tick1\ntick2\ntick3\ntick4\ntick5\n");
      assert.equal((await one({ verb: "show", name: "ticker" })).state, "exited");
    });

    test("attach forwards stdin and prints output; closing stdin detaches", async () => {
      await start("repl", ["sh", "-c", 'while read -r l; do echo "re:$l"; done']);
      const argv = sessionArgv(scripts, shell, base, { verb: "attach", name: "repl" });
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
      const closed = new Promise<number | null>((r) => child.on("close", r));
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      let seen = "";
      const echoed = new Promise<boolean>((resolve) => {
        child.stdout.on("data", (c: Buffer) => {
          seen += c.toString();
          if (seen.includes("re:ping")) resolve(true);
        });
        void closed.then(() => resolve(false));
      });
      child.stdin.write("ping\n");
      assert.ok(await echoed, `attach printed ${JSON.stringify(seen)}`);
      child.stdin.end();
      const code = await closed;
      clearTimeout(timer);
      assert.equal(code, 0);
      assert.equal((await one({ verb: "show", name: "repl" })).state, "running", "detach");
      await ok({ verb: "stop", name: "repl", timeoutMs: 5000 });
    });
  });
}

test("session names are validated", () => {
  for (const good of ["a", "web", "dev-server", "job_1", "v1.2", "a".repeat(63)])
    assert.doesNotThrow(() => validateSessionName(good), good);
  for (const bad of ["", "-a", ".a", "_a", "A", "a b", "a/b", "a".repeat(64), "é"])
    assert.throws(() => validateSessionName(bad), /invalid session name/, bad);
});

test("records parse, with tabs in the command kept", () => {
  const text =
    "web\trunning\t42\t\t2025-01-01T00:00:00Z\t/root\tnpm run dev\n" +
    "job\texited\t7\t143\t2025-01-01T00:00:01Z\t/root/x\tsh -c 'a\tb'\n" +
    "old\tlost\t\t\t\t/root\tsleep 1\n";
  assert.deepEqual(parseSessionRecords(text), [
    {
      name: "web",
      state: "running",
      pid: 42,
      exitCode: null,
      startedAt: "2025-01-01T00:00:00Z",
      cwd: "/root",
      command: "npm run dev",
    },
    {
      name: "job",
      state: "exited",
      pid: 7,
      exitCode: 143,
      startedAt: "2025-01-01T00:00:01Z",
      cwd: "/root/x",
      command: "sh -c 'a\tb'",
    },
    {
      name: "old",
      state: "lost",
      pid: null,
      exitCode: null,
      startedAt: null,
      cwd: "/root",
      command: "sleep 1",
    },
  ]);
  assert.throws(
    () => parseSessionRecords("web\tzombie\t1\t\t\t/\tx\n"),
    /unknown state where a session record belongs/,
  );
  assert.throws(
    () => parseSessionRecords("garbage\n"),
    /a record of 1 fields where a session record belongs/,
  );
});

test("the command's display form is one line", () => {
  assert.equal(displayCommand(["npm", "run", "dev"]), "npm run dev");
  assert.equal(displayCommand(["sh", "-c", "a\nb\tc"]), "sh -c 'a\\nb\\tc'");
});

test("script errors parse into kind and message", () => {
  assert.deepEqual(parseSessionError("noise\nbanger-session: exists: session 'a' is running\n"), {
    kind: "exists",
    message: "session 'a' is running",
  });
  assert.equal(parseSessionError("sh: 1: oops\n"), null);
});
