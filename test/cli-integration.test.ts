import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { SystemStatus } from "../src/system/system-status.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";
import { ensureBuilt } from "./helpers/build.js";

const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const banger = path.join(root, "bin", "banger");

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function cli(home: TempLayout, ...args: string[]): Promise<CliResult> {
  try {
    const { stdout, stderr } = await run(banger, args, { env: home.env, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (typeof e.code !== "number") {
      // A hung command: show what the daemon logged, so the failure explains itself.
      const log = await fs
        .readFile(home.layout.daemonLogFile, "utf8")
        .catch(() => "(no daemon log)");
      throw new Error(
        `banger ${args.join(" ")} did not finish: ${String(err)}\ndaemon log:\n${log.slice(-4000)}`,
      );
    }
    return { code: e.code, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number): Promise<void> {
  for (let i = 0; i < 200 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(isAlive(pid), false, `pid ${pid} should have exited`);
}

let home: TempLayout;
before(async () => {
  // Builds the project exactly as `make build` does, then drives the real bin/banger.
  await ensureBuilt(root);
  home = await tempLayout("banger-it-");
});

after(async () => {
  const pidText = await fs.readFile(home.layout.pidFile, "utf8").catch(() => "");
  const pid = Number.parseInt(pidText, 10);
  if (pid > 0 && isAlive(pid)) process.kill(pid, "SIGKILL");
  await home.cleanup();
});

test("the CLI starts the daemon on demand, survives its kill -9, and stops it", async () => {
  const first = await cli(home, "vm", "list", "--json");
  assert.equal(first.code, 0, first.stderr);
  assert.deepEqual(JSON.parse(first.stdout), []);
  assert.match(first.stderr, /started bangerd in the background \(pid \d+\)/);

  const status = await cli(home, "daemon", "status", "--json");
  const info = JSON.parse(status.stdout) as { running: boolean; pid: number };
  assert.equal(info.running, true);
  assert.ok(isAlive(info.pid));

  // A second call reuses the running daemon and says nothing about starting one.
  const again = await cli(home, "image", "list", "--json");
  assert.equal(again.code, 0);
  assert.equal(again.stderr, "");

  process.kill(info.pid, "SIGKILL");
  await waitGone(info.pid);

  // Stale socket and lock are left behind; the next call must replace them.
  const afterKill = await cli(home, "kernel", "ls", "--json");
  assert.equal(afterKill.code, 0, afterKill.stderr);
  assert.deepEqual(JSON.parse(afterKill.stdout), []);
  assert.match(afterKill.stderr, /started bangerd/);
  const status2 = JSON.parse((await cli(home, "daemon", "status", "--json")).stdout) as {
    pid: number;
  };
  assert.notEqual(status2.pid, info.pid);

  const stop = await cli(home, "daemon", "stop");
  assert.equal(stop.code, 0);
  assert.match(stop.stdout, /stopped bangerd/);
  await waitGone(status2.pid);
  const stopped = JSON.parse((await cli(home, "daemon", "status", "--json")).stdout) as {
    running: boolean;
  };
  assert.equal(stopped.running, false);
});

test("user errors print a message and a hint, and exit 1", async () => {
  const missing = await cli(home, "vm", "show", "ghost");
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /banger: error: no VM named "ghost"/);
  assert.match(missing.stderr, /hint: 'banger vm list' shows what exists/);

  // Without sudo's SUDO_USER nothing says whose units to install: refused before anything is written.
  const noSudo = { ...home, env: { ...home.env, SUDO_USER: "" } };
  const guess = await cli(noSudo, "system", "install");
  assert.equal(guess.code, 1);
  assert.match(guess.stderr, /does not know which user to install for|must run as root/);
  assert.match(guess.stderr, /hint: .*sudo banger system install/);
  // Status reads this machine: systemd runs iff /run/systemd/system is a directory, and
  // for a named user it reports that user's units where banger puts them.
  const systemd = await fs.stat("/run/systemd/system").then(
    (st) => st.isDirectory(),
    () => false,
  );
  const me = os.userInfo();
  const status = await cli(noSudo, "system", "status", "--user", me.username, "--json");
  assert.equal(status.code, 0, status.stderr);
  const report = JSON.parse(status.stdout) as SystemStatus;
  assert.equal(report.systemdRunning, systemd);
  assert.equal(report.installs.length, 1);
  const [mine] = report.installs;
  assert.deepEqual([mine!.user, mine!.uid], [me.username, me.uid]);
  const unit = `/etc/systemd/system/banger-helper-${me.username}.service`;
  assert.deepEqual([mine!.helper.unit, mine!.helper.path], [path.basename(unit), unit]);
  const unitThere = await fs.access(unit).then(
    () => true,
    () => false,
  );
  if (!unitThere) assert.equal(mine!.helper.installed, false);
  if (!systemd) {
    assert.deepEqual([mine!.helper.enabled, mine!.helper.active], [null, null]);
    assert.deepEqual([mine!.daemon.enabled, mine!.daemon.active], [null, null]);
  }
  const text = await cli(noSudo, "system", "status", "--user", me.username);
  assert.equal(text.code, 0, text.stderr);
  if (!systemd) assert.match(text.stdout, /^systemd is not running here/);

  const both = await cli(
    home,
    "image",
    "register",
    "--rootfs",
    "/x.ext4",
    "--kernel-ref",
    "k",
    "--kernel",
    "/boot/k",
  );
  assert.equal(both.code, 1);
  assert.match(
    both.stderr,
    /--kernel-ref and --kernel\/--initrd\/--modules are mutually exclusive/,
  );

  // A clone's shape is its snapshot's: refused on the CLI before any daemon is asked.
  const sized = await cli(home, "vm", "create", "--from-snapshot", "base", "--vcpu", "2");
  assert.equal(sized.code, 1);
  assert.match(sized.stderr, /--from-snapshot cannot be given with --vcpu/);
  const noSnap = await cli(home, "snapshot", "show", "ghost");
  assert.equal(noSnap.code, 1);
  assert.match(noSnap.stderr, /no snapshot named "ghost"[\s\S]*hint: 'banger snapshot list'/);
  const noClone = await cli(home, "vm", "create", "--from-snapshot", "ghost");
  assert.match(noClone.stderr, /no snapshot named "ghost"/);
  const notRunning = await cli(home, "vm", "snapshot", "ghost");
  assert.match(notRunning.stderr, /no VM named "ghost"/);

  const typo = await cli(home, "vm", "lst");
  assert.notEqual(typo.code, 0);
  assert.match(typo.stderr, /unknown command 'lst'\n\(Did you mean one of list, ls\?\)/);
  await cli(home, "daemon", "stop");
});

test("version and help work without a daemon", async () => {
  await cli(home, "daemon", "stop");
  const version = await cli(home, "version", "--json");
  assert.equal(version.code, 0);
  assert.equal((JSON.parse(version.stdout) as { daemon: string | null }).daemon, null);
  const help = await cli(home, "vm", "create", "--help");
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Defaults on this machine: vcpu \d+ \((config|auto|builtin)\)/);
  assert.equal(
    await fs.access(home.layout.socketFile).then(
      () => true,
      () => false,
    ),
    false,
  );
});
