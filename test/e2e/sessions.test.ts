import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// `banger vm session` against one real VM (QEMU microvm, TCG), through the real bin/banger.
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const VM = "sess-e2e";
// A dev home with the default kernel and image already built saves ~1 min; without it the
// first create builds them.
let home: TempLayout;
const { cli, ok } = bangerCli(() => home.env);

interface Session {
  name: string;
  state: string;
  pid: number | null;
  exitCode: number | null;
  startedAt: string | null;
  cwd: string;
  command: string;
}

const show = async (name: string): Promise<Session> =>
  JSON.parse((await ok("vm", "session", "show", VM, name, "--json")).stdout) as Session;

async function qemuPids(): Promise<number[]> {
  const r = await run("pgrep", ["-f", `qemu-system-x86_64 -name banger-${VM} `]).catch(() => ({
    stdout: "",
  }));
  return r.stdout.split("\n").filter(Boolean).map(Number);
}

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-sessions-");
  await useSharedDefaultImage(home);
  await ok("vm", "create", "--name", VM, "--memory", "1G", "--disk-size", "1G");
});

after(async () => {
  await cli("vm", "delete", VM);
  for (const pid of await qemuPids()) process.kill(pid, "SIGKILL");
  await cli("daemon", "stop");
  await home.cleanup();
});

test(
  "start → list → show → send → logs → stop; kill; logs -f; clear errors",
  { timeout: 600_000 },
  async () => {
    const started = await ok(
      "vm",
      "session",
      "start",
      VM,
      "echo",
      "--cwd",
      "/tmp",
      "--",
      "sh",
      "-c",
      'echo ready; while read -r l; do echo "got:$l"; done',
    );
    assert.match(started.stdout, /^echo started \(pid \d+\)$/m);

    const list = JSON.parse((await ok("vm", "session", "list", VM, "--json")).stdout) as Session[];
    assert.deepEqual(
      list.map((s) => [s.name, s.state]),
      [["echo", "running"]],
    );
    const table = (await ok("vm", "session", "ls", VM)).stdout;
    assert.match(table, /^NAME\s+STATE\s+PID\s+EXIT\s+STARTED\s+COMMAND$/m);

    const info = await show("echo");
    assert.equal(info.state, "running");
    assert.equal(info.cwd, "/tmp");
    assert.ok(info.pid && info.pid > 1, JSON.stringify(info));
    assert.match(info.command, /^sh -c 'echo ready;/);

    // The SSH connection that started it is long gone: the process still runs in the guest.
    const probe = await ok("vm", "ssh", VM, "--", "kill", "-0", String(info.pid));
    assert.equal(probe.code, 0);

    await ok("vm", "session", "send", VM, "echo", "hello from the host");
    let logs = "";
    for (let i = 0; i < 60 && !logs.includes("got:hello from the host"); i++) {
      logs = (await ok("vm", "session", "logs", VM, "echo")).stdout;
      if (!logs.includes("got:")) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(logs, "ready\ngot:hello from the host\n");

    const stopped = await ok("vm", "session", "stop", VM, "echo");
    assert.match(stopped.stdout, /echo exited with code 143 \(signal 15\)/);
    const ended = await show("echo");
    assert.equal(ended.state, "exited");
    assert.equal(ended.exitCode, 143);
    const gone = await cli("vm", "ssh", VM, "--", "kill", "-0", String(info.pid));
    assert.notEqual(gone.code, 0, "the process is gone");

    // A session that ignores SIGTERM: kill ends it at once.
    await ok(
      "vm",
      "session",
      "start",
      VM,
      "stubborn",
      "--",
      "sh",
      "-c",
      "trap '' TERM; while :; do sleep 1; done",
    );
    const killed = await ok("vm", "session", "kill", VM, "stubborn");
    assert.match(killed.stdout, /stubborn exited with code 137 \(signal 9\)/);

    // Clear errors, and nothing started by them.
    await ok("vm", "session", "start", VM, "busy", "--", "sleep", "600");
    const cases: Array<[string[], RegExp]> = [
      [["start", VM, "busy", "--", "true"], /session 'busy' is already running/],
      [["start", VM, "nocmd", "--", "no-such-command"], /'no-such-command' is not an executable/],
      [["start", VM, "Bad Name", "--", "true"], /invalid session name "Bad Name"/],
      [["start", VM, "nothing"], /no command to start/],
      [["send", VM, "echo", "late"], /session 'echo' is not running \(exited\)/],
      [["show", VM, "ghost"], /no session named 'ghost' in VM sess-e2e/],
    ];
    for (const [args, pattern] of cases) {
      const r = await cli("vm", "session", ...args);
      assert.equal(r.code, 1, args.join(" "));
      assert.match(r.stderr, pattern);
      assert.match(r.stderr, /hint: /, "the error says what to do next");
    }
    const names = (
      JSON.parse((await ok("vm", "session", "list", VM, "--json")).stdout) as Session[]
    ).map((s) => s.name);
    assert.deepEqual(names.sort(), ["busy", "echo", "stubborn"]);
    await ok("vm", "session", "kill", VM, "busy");

    // logs -f prints everything and returns when the session exits.
    await ok(
      "vm",
      "session",
      "start",
      VM,
      "ticker",
      "--",
      "sh",
      "-c",
      "for i in 1 2 3; do echo tick$i; sleep 1; done; exit 4",
    );
    const followed = await ok("vm", "session", "logs", VM, "ticker", "-f");
    assert.equal(followed.stdout, "tick1\ntick2\ntick3\n");
    assert.match(followed.stderr, /session ticker exited with code 4/);
    assert.equal((await show("ticker")).exitCode, 4);

    // An exited name can be reused.
    await ok("vm", "session", "start", VM, "ticker", "--", "sh", "-c", "echo again");
    const again = await ok("vm", "session", "logs", VM, "ticker", "-f");
    assert.equal(again.stdout, "again\n");
  },
);
