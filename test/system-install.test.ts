import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { BangerError } from "../src/api/errors.js";
import type { CommandResult, CommandRunner } from "../src/system/runner.js";
import { cidrsOverlap, makePin } from "../src/net/pin.js";
import type { SystemDeps, UserInfo } from "../src/system/system-deps.js";
import { installSystem } from "../src/system/system-install.js";
import { systemStatus } from "../src/system/system-status.js";
import { uninstallSystem } from "../src/system/system-uninstall.js";
import { whyNotRootOwned } from "../src/system/root-owned.js";
import { createCommandRunner } from "../src/system/runner.js";
import { daemonUnit, execWord, helperUnit } from "../src/system/systemd-units.js";
import { directFiles, userFilesVia, type UserFiles } from "../src/system/user-files.js";

const checkout = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
const alice: UserInfo = { name: "alice", uid: 1000, gid: 1000, home: "/home/alice" };
const bob: UserInfo = { name: "bob", uid: 1001, gid: 1001, home: "/home/bob" };
const users: Record<string, UserInfo> = { alice, "1000": alice, bob, "1001": bob };

/** systemctl as a recorder with just enough state for is-enabled/is-active to tell the truth. */
class FakeSystemctl implements CommandRunner {
  calls: string[] = [];
  enabled = new Set<string>();
  active = new Set<string>();
  /** Answer for --user calls: false simulates an unreachable user manager. */
  userManager = true;

  async which(cmd: string): Promise<string | null> {
    return cmd;
  }

  async run(cmd: string, args: string[]): Promise<CommandResult> {
    assert.equal(cmd, "systemctl");
    this.calls.push(args.join(" "));
    const ok = (stdout = ""): CommandResult => ({ code: 0, signal: null, stdout, stderr: "" });
    const fail = (stdout: string, stderr = ""): CommandResult => ({
      code: 1,
      signal: null,
      stdout,
      stderr,
    });
    const user = args[0] === "--user";
    if (user && !this.userManager) return fail("", "Failed to connect to bus: No medium found");
    const rest = args.filter((a, i) => a !== "--user" && a !== "-M" && args[i - 1] !== "-M");
    const key = (unit: string) => `${user ? "user" : "system"}:${unit}`;
    const [verb, ...more] = rest;
    const unit = more[more.length - 1] ?? "";
    switch (verb) {
      case "daemon-reload":
        return ok();
      case "is-enabled":
        return this.enabled.has(key(unit)) ? ok("enabled\n") : fail("disabled\n");
      case "is-active":
        return this.active.has(key(unit)) ? ok("active\n") : fail("inactive\n");
      case "enable":
        this.enabled.add(key(unit));
        if (more.includes("--now")) this.active.add(key(unit));
        return ok();
      case "disable":
        this.enabled.delete(key(unit));
        if (more.includes("--now")) this.active.delete(key(unit));
        return ok();
      case "start":
      case "restart":
        this.active.add(key(unit));
        return ok();
      default:
        throw new Error(`unexpected systemctl ${args.join(" ")}`);
    }
  }

  /** The calls that change something, i.e. everything but questions. */
  mutations(): string[] {
    return this.calls.filter((c) => !/ ?is-(enabled|active) /.test(` ${c} `));
  }
}

let tmp: string;

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "banger-system-"));
});
after(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function makeRoot(opts: { systemd: boolean }): Promise<string> {
  const root = await fs.mkdtemp(path.join(tmp, "root-"));
  await fs.mkdir(path.join(root, "home/alice"), { recursive: true });
  await fs.mkdir(path.join(root, "home/bob"), { recursive: true });
  if (opts.systemd) await fs.mkdir(path.join(root, "run/systemd/system"), { recursive: true });
  return root;
}

function makeDeps(
  root: string,
  overrides: Partial<SystemDeps> = {},
): SystemDeps & { said: string[]; systemctl: FakeSystemctl; userSteps: string[] } {
  const said: string[] = [];
  const userSteps: string[] = [];
  const systemctl = new FakeSystemctl();
  // Direct file steps (the test is not root, or is and may write as it likes), recorded so tests
  // see what install did in the user's home.
  const recorded: UserFiles = {
    ...directFiles,
    async mkdirs(dir) {
      userSteps.push(`mkdirs ${path.relative(root, dir)}`);
      await directFiles.mkdirs(dir);
    },
    async write(file, content) {
      userSteps.push(`write ${path.relative(root, file)}`);
      await directFiles.write(file, content);
    },
    async remove(file) {
      userSteps.push(`remove ${path.relative(root, file)}`);
      await directFiles.remove(file);
    },
  };
  return {
    root,
    runner: systemctl,
    env: { SUDO_USER: "alice" },
    euid: 0,
    nodePath: "/opt/node 20/bin/node",
    installDir: "/srv/banger",
    lookupUser: async (spec) => users[spec] ?? null,
    userFiles: () => recorded,
    whyNotRootOwned: async () => null,
    probeHelper: async () => ({ answers: true, detail: "banger-helper answers (pid 42)" }),
    daemonAnswers: async () => false,
    hostSubnetClash: async () => null,
    pinFor: makePin,
    subnetsOverlap: cidrsOverlap,
    say: (line) => said.push(line),
    said,
    systemctl,
    userSteps,
    ...overrides,
  };
}

const helperPath = (root: string) =>
  path.join(root, "etc/systemd/system/banger-helper-alice.service");
const daemonPath = (root: string) =>
  path.join(root, "home/alice/.config/systemd/user/bangerd.service");

async function rejectsWith(p: Promise<unknown>, message: RegExp, hint?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof BangerError, String(err));
    assert.match(err.message, message);
    if (hint) assert.match(err.hint ?? "", hint);
    return true;
  });
}

test("units: absolute paths, the user, hardening and restart policy", () => {
  const paths = { nodePath: "/usr/bin/node", installDir: "/srv/banger" };
  const helper = helperUnit("alice", paths, { bridge: "banger3", subnet: "172.30.3.0/24" });
  assert.match(helper, /^# Written by 'banger system install'/);
  assert.match(
    helper,
    /^ExecStart=\/usr\/bin\/node \/srv\/banger\/bin\/banger-helper --user alice --bridge banger3 --subnet 172\.30\.3\.0\/24$/m,
  );
  for (const line of [
    "Restart=on-failure",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ReadWritePaths=/run/banger-helper /proc/sys/net/ipv4/ip_forward",
    "ProtectKernelTunables=yes",
    "ProtectHome=read-only",
    "RuntimeDirectory=banger-helper",
    "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6",
    "WantedBy=multi-user.target",
  ])
    assert.ok(helper.split("\n").includes(line), `helper unit lacks ${line}`);
  assert.match(helper, /^CapabilityBoundingSet=CAP_NET_ADMIN( CAP_[A-Z_]+)*$/m);
  assert.doesNotMatch(helper, /^User=/m);

  const daemon = daemonUnit("alice", paths);
  assert.match(daemon, /^ExecStart=\/usr\/bin\/node \/srv\/banger\/bin\/bangerd$/m);
  for (const line of ["Restart=on-failure", "KillMode=process", "WantedBy=default.target"])
    assert.ok(daemon.split("\n").includes(line), `daemon unit lacks ${line}`);
});

test("ExecStart words with spaces, quotes, % and $ are quoted for systemd", () => {
  assert.equal(execWord("/usr/bin/node"), "/usr/bin/node");
  assert.equal(execWord("/opt/node 20/node"), '"/opt/node 20/node"');
  assert.equal(execWord('/a"b\\c'), '"/a\\"b\\\\c"');
  assert.equal(execWord("/100%/$HOME"), '"/100%%/$$HOME"');
  assert.throws(() => execWord("/a\nb"), /control character/);
});

test("install writes both units, reloads, enables and starts; a second run changes nothing", async () => {
  const root = await makeRoot({ systemd: true });
  const deps = makeDeps(root);
  await installSystem(deps);

  const helper = await fs.readFile(helperPath(root), "utf8");
  assert.match(
    helper,
    /^ExecStart="\/opt\/node 20\/bin\/node" \/srv\/banger\/bin\/banger-helper --user alice --bridge banger0 --subnet 172\.30\.0\.0\/24$/m,
  );
  const daemon = await fs.readFile(daemonPath(root), "utf8");
  assert.match(daemon, /^ExecStart="\/opt\/node 20\/bin\/node" \/srv\/banger\/bin\/bangerd$/m);
  assert.equal((await fs.stat(helperPath(root))).mode & 0o777, 0o644);
  // Everything in alice's home goes through the steps done as alice; root writes only /etc.
  assert.deepEqual(deps.userSteps, [
    "mkdirs home/alice/.config/systemd/user",
    "write home/alice/.config/systemd/user/bangerd.service",
  ]);
  assert.deepEqual(deps.systemctl.mutations(), [
    "daemon-reload",
    "enable --now banger-helper-alice.service",
    "--user -M alice@ daemon-reload",
    "--user -M alice@ enable --now bangerd.service",
  ]);
  const stamp = (await fs.stat(helperPath(root))).mtimeMs;

  const again = makeDeps(root);
  again.systemctl.enabled = deps.systemctl.enabled;
  again.systemctl.active = deps.systemctl.active;
  await installSystem(again);
  assert.deepEqual(again.systemctl.mutations(), []);
  assert.deepEqual(again.userSteps, ["mkdirs home/alice/.config/systemd/user"]);
  assert.equal((await fs.stat(helperPath(root))).mtimeMs, stamp);
  assert.ok(again.said.some((l) => l.startsWith("unchanged ")));
  assert.deepEqual(
    (await fs.readdir(path.dirname(daemonPath(root)))).sort(),
    ["bangerd.service"],
    "no temp files left behind",
  );
});

test("install after banger moved rewrites the units and restarts what runs", async () => {
  const root = await makeRoot({ systemd: true });
  const first = makeDeps(root);
  await installSystem(first);
  const moved = makeDeps(root, { installDir: "/srv/banger-2" });
  moved.systemctl.enabled = first.systemctl.enabled;
  moved.systemctl.active = first.systemctl.active;
  await installSystem(moved);
  assert.match(await fs.readFile(helperPath(root), "utf8"), /\/srv\/banger-2\/bin\/banger-helper/);
  assert.deepEqual(moved.systemctl.mutations(), [
    "daemon-reload",
    "restart banger-helper-alice.service",
    "--user -M alice@ daemon-reload",
    "--user -M alice@ restart bangerd.service",
  ]);
});

test("install refuses to guess the user, and needs root", async () => {
  const root = await makeRoot({ systemd: true });
  await rejectsWith(
    installSystem(makeDeps(root, { env: {} })),
    /does not know which user/,
    /--user <name>/,
  );
  await rejectsWith(
    installSystem(makeDeps(root, { env: {}, euid: 1000 })),
    /must run as root/,
    /sudo banger system install/,
  );
  await rejectsWith(installSystem(makeDeps(root), { user: "mallory" }), /no user "mallory"/);
  await rejectsWith(
    installSystem(makeDeps(root, { lookupUser: async () => ({ ...alice, name: "root", uid: 0 }) })),
    /no units for root/,
  );
  assert.deepEqual(
    await fs.readdir(root).then((d) => d.sort()),
    ["home", "run"],
    "nothing written",
  );
});

test("without systemd, install fails with how to run the helper by hand, unless --no-start", async () => {
  const root = await makeRoot({ systemd: false });
  const deps = makeDeps(root);
  await rejectsWith(
    installSystem(deps, { user: "alice" }),
    /systemd is not running/,
    /sudo banger-helper --user alice &/,
  );
  assert.equal(await fs.stat(helperPath(root)).catch(() => null), null);

  await installSystem(deps, { noStart: true });
  assert.ok(await fs.stat(helperPath(root)));
  assert.ok(await fs.stat(daemonPath(root)));
  assert.deepEqual(deps.systemctl.calls, [], "systemctl is never asked without systemd");
});

test("--no-start with systemd enables but starts nothing", async () => {
  const root = await makeRoot({ systemd: true });
  const deps = makeDeps(root);
  await installSystem(deps, { noStart: true });
  assert.deepEqual(deps.systemctl.mutations(), [
    "daemon-reload",
    "enable banger-helper-alice.service",
    "--user -M alice@ daemon-reload",
    "--user -M alice@ enable bangerd.service",
  ]);
  assert.equal(deps.systemctl.active.size, 0);
});

test("an unreachable user manager gets the exact command to run as that user", async () => {
  const root = await makeRoot({ systemd: true });
  const deps = makeDeps(root);
  deps.systemctl.userManager = false;
  await installSystem(deps);
  assert.ok(await fs.stat(daemonPath(root)));
  assert.ok(
    deps.said.includes(
      "As alice, run: systemctl --user daemon-reload && systemctl --user enable --now bangerd.service",
    ),
    deps.said.join("\n"),
  );
});

test("a bangerd started on demand is not fought: the unit is enabled, not started", async () => {
  const root = await makeRoot({ systemd: true });
  const deps = makeDeps(root, { daemonAnswers: async () => true });
  await installSystem(deps);
  assert.ok(deps.systemctl.mutations().includes("--user -M alice@ enable bangerd.service"));
  assert.ok(deps.said.some((l) => /banger daemon stop && systemctl --user start/.test(l)));
});

test("install will not overwrite a unit it did not write", async () => {
  const root = await makeRoot({ systemd: true });
  await fs.mkdir(path.dirname(helperPath(root)), { recursive: true });
  await fs.writeFile(helperPath(root), "[Service]\nExecStart=/bin/true\n");
  await rejectsWith(installSystem(makeDeps(root)), /was not written by banger/);
  assert.equal(await fs.readFile(helperPath(root), "utf8"), "[Service]\nExecStart=/bin/true\n");
});

/** A real unprivileged account for the setpriv tests, or why they cannot run here. */
function setprivUser(): UserInfo | string {
  if (process.geteuid?.() !== 0) return "not root";
  if (spawnSync("setpriv", ["--version"]).status !== 0) return "setpriv is not installed";
  const r = spawnSync("getent", ["passwd", "nobody"], { encoding: "utf8" });
  const f = (r.stdout ?? "").split(":");
  if (r.status !== 0 || f.length < 6) return "no user nobody";
  return { name: "nobody", uid: Number(f[2]), gid: Number(f[3]), home: "/home/nobody" };
}

/** A temp root the given user can reach, with their home owned by them. */
async function rootFor(user: UserInfo): Promise<string> {
  const root = await makeRoot({ systemd: true });
  const home = path.join(root, user.home);
  await fs.mkdir(home, { recursive: true });
  await fs.chown(home, user.uid, user.gid);
  for (let dir = path.dirname(home); dir.startsWith(tmp); dir = path.dirname(dir))
    await fs.chmod(dir, 0o755);
  return root;
}

function realUserDeps(root: string, user: UserInfo) {
  return makeDeps(root, {
    env: { SUDO_USER: user.name },
    lookupUser: async (spec) => (spec === user.name ? user : null),
    userFiles: (u) => userFilesVia(createCommandRunner(), 0, u),
  });
}

test("as root, the user unit is written and removed by the user through setpriv", async (t) => {
  const user = setprivUser();
  if (typeof user === "string") return t.skip(user);
  const root = await rootFor(user);
  const unitDir = path.join(root, user.home, ".config/systemd/user");
  const unit = path.join(unitDir, "bangerd.service");
  await installSystem(realUserDeps(root, user));
  for (const p of [unit, unitDir, path.dirname(unitDir)]) {
    const st = await fs.lstat(p);
    assert.equal(st.uid, user.uid, `${p} belongs to ${user.name}`);
  }
  assert.equal((await fs.stat(unit)).mode & 0o777, 0o644);
  assert.equal(await fs.readFile(unit, "utf8"), daemonUnit(user.name, makeDeps(root)));
  assert.deepEqual(await fs.readdir(unitDir), ["bangerd.service"], "no temp file left");
  assert.equal((await fs.stat(helperPath(root).replace("alice", user.name))).uid, 0);

  const again = realUserDeps(root, user);
  await installSystem(again);
  assert.ok(again.said.includes(`unchanged ${unit}`), again.said.join("\n"));

  await uninstallSystem(realUserDeps(root, user));
  assert.deepEqual(await fs.readdir(unitDir), []);
});

test("as root, symlinks in the user's home lead nowhere the user could not write", async (t) => {
  const user = setprivUser();
  if (typeof user === "string") return t.skip(user);
  const root = await rootFor(user);
  const victim = path.join(root, "victim");
  await fs.mkdir(victim, { mode: 0o755 });
  const secret = path.join(victim, "secret");
  await fs.writeFile(secret, "root's\n", { mode: 0o600 });

  // The unit directory swapped for a link to a root-owned directory: the user cannot write there.
  const config = path.join(root, user.home, ".config");
  await fs.symlink(victim, config);
  await rejectsWith(installSystem(realUserDeps(root, user)), /could not create .* as nobody/);
  assert.deepEqual(await fs.readdir(victim), ["secret"]);

  // The unit file a link to a root-only file: refused, and the file stays root's.
  await fs.rm(config);
  const unitDir = path.join(config, "systemd/user");
  await fs.mkdir(unitDir, { recursive: true });
  await fs.chown(config, user.uid, user.gid);
  await fs.chown(path.join(config, "systemd"), user.uid, user.gid);
  await fs.chown(unitDir, user.uid, user.gid);
  await fs.symlink(secret, path.join(unitDir, "bangerd.service"));
  await rejectsWith(installSystem(realUserDeps(root, user)), /not a regular file/);
  const st = await fs.stat(secret);
  assert.equal(st.uid, 0);
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(await fs.readFile(secret, "utf8"), "root's\n");
});

test("install refuses node or a checkout that anyone but root can change", async () => {
  const root = await makeRoot({ systemd: true });
  const deps = makeDeps(root, {
    whyNotRootOwned: async (p) =>
      p === "/srv/banger" ? "/srv/banger is owned by uid 1000, not root" : null,
  });
  await rejectsWith(
    installSystem(deps),
    /must be changeable by root only: \/srv\/banger is owned by uid 1000/,
    /sudo git clone .* \/opt\/banger && cd \/opt\/banger && sudo make build.*root-owned node/,
  );
  assert.equal(await fs.stat(helperPath(root)).catch(() => null), null, "nothing written");
  assert.equal(await fs.stat(daemonPath(root)).catch(() => null), null);
  assert.deepEqual(deps.systemctl.calls, []);
});

test("whyNotRootOwned: a path its user can write is refused", async () => {
  const dir = await fs.mkdtemp(path.join(tmp, "owned-"));
  const node = path.join(dir, "node");
  await fs.writeFile(node, "", { mode: 0o755 });
  if (process.geteuid?.() !== 0) {
    assert.match((await whyNotRootOwned(node)) ?? "", /is owned by uid \d+, not root/);
    return;
  }
  await fs.chmod(tmp, 0o755);
  await fs.chmod(dir, 0o755);
  assert.equal(await whyNotRootOwned(node), null, "root-owned, 0755 all the way up");
  assert.equal(await whyNotRootOwned(dir), null);

  await fs.chmod(dir, 0o775);
  assert.match(
    (await whyNotRootOwned(node)) ?? "",
    /owned-.* \(above .*\) is writable by its group/,
  );
  await fs.chmod(dir, 0o755);
  await fs.chmod(node, 0o757);
  assert.match((await whyNotRootOwned(node)) ?? "", /node is writable by others/);
  await fs.chmod(node, 0o755);

  // A user's file behind a root-owned link, and a root-owned file behind a link in a user's dir.
  const theirs = path.join(dir, "theirs");
  await fs.mkdir(theirs);
  await fs.chown(theirs, 65534, 65534);
  const theirNode = path.join(theirs, "node");
  await fs.writeFile(theirNode, "", { mode: 0o755 });
  await fs.symlink(theirNode, path.join(dir, "link"));
  assert.match((await whyNotRootOwned(path.join(dir, "link"))) ?? "", /owned by uid 65534/);
  await fs.chown(theirs, 0, 0);
  await fs.symlink(node, path.join(theirs, "link"));
  await fs.chown(theirs, 65534, 65534);
  assert.match((await whyNotRootOwned(path.join(theirs, "link"))) ?? "", /owned by uid 65534/);
});

test("uninstall removes only banger's units and their enable links; a second run does nothing", async () => {
  const root = await makeRoot({ systemd: true });
  const deps = makeDeps(root);
  await installSystem(deps);
  const unitDir = path.dirname(helperPath(root));
  const foreign = path.join(unitDir, "banger-helper-bob.service");
  await fs.writeFile(foreign, "[Service]\nExecStart=/bin/true\n");
  const userForeign = path.join(path.dirname(daemonPath(root)), "other.service");
  await fs.writeFile(userForeign, "[Service]\nExecStart=/bin/true\n");
  // What `systemctl enable` would have made, had systemd not been a fake.
  await fs.mkdir(path.join(unitDir, "multi-user.target.wants"));
  await fs.symlink(
    helperPath(root),
    path.join(unitDir, "multi-user.target.wants/banger-helper-alice.service"),
  );

  const un = makeDeps(root);
  un.systemctl.enabled = deps.systemctl.enabled;
  un.systemctl.active = deps.systemctl.active;
  await uninstallSystem(un);
  assert.deepEqual(un.systemctl.mutations(), [
    "--user -M alice@ disable --now bangerd.service",
    "--user -M alice@ daemon-reload",
    "disable --now banger-helper-alice.service",
    "daemon-reload",
  ]);
  assert.equal(un.systemctl.active.size, 0);
  assert.equal(await fs.stat(helperPath(root)).catch(() => null), null);
  assert.equal(await fs.stat(daemonPath(root)).catch(() => null), null);
  assert.deepEqual(await fs.readdir(path.join(unitDir, "multi-user.target.wants")), []);
  assert.ok(await fs.stat(foreign), "a foreign unit next to ours survives");
  assert.ok(await fs.stat(userForeign), "a foreign user unit survives");

  const again = makeDeps(root);
  await uninstallSystem(again);
  assert.deepEqual(again.systemctl.calls, []);
  assert.ok(again.said.some((l) => /nothing to remove/.test(l)));
});

test("uninstall leaves a same-named unit banger did not write", async () => {
  const root = await makeRoot({ systemd: false });
  await fs.mkdir(path.dirname(helperPath(root)), { recursive: true });
  await fs.writeFile(helperPath(root), "[Service]\nExecStart=/bin/true\n");
  const deps = makeDeps(root);
  await uninstallSystem(deps);
  assert.ok(await fs.stat(helperPath(root)));
  assert.ok(deps.said.some((l) => /left .* alone/.test(l)));
});

test("status --json: installed, enabled, active and sockets for each unit", async () => {
  const root = await makeRoot({ systemd: true });
  const before = await systemStatus(
    makeDeps(root, { probeHelper: async () => ({ answers: false, detail: "no answer" }) }),
  );
  assert.equal(before.systemdRunning, true);
  assert.equal(before.installs[0]?.helper.installed, false);
  assert.equal(before.installs[0]?.helper.enabled, false);

  const deps = makeDeps(root);
  await installSystem(deps);
  const st = makeDeps(root, {
    daemonAnswers: async (s) => s === "/run/user/1000/banger/bangerd.sock",
  });
  st.systemctl.enabled = deps.systemctl.enabled;
  st.systemctl.active = deps.systemctl.active;
  const status = JSON.parse(JSON.stringify(await systemStatus(st))) as typeof before;
  assert.deepEqual(status, {
    systemdRunning: true,
    installs: [
      {
        user: "alice",
        uid: 1000,
        helper: {
          unit: "banger-helper-alice.service",
          scope: "system",
          path: helperPath(root),
          installed: true,
          enabled: true,
          active: true,
          socket: "/run/banger-helper/1000.sock",
          answers: true,
          detail: "banger-helper answers (pid 42)",
        },
        daemon: {
          unit: "bangerd.service",
          scope: "user",
          path: daemonPath(root),
          installed: true,
          enabled: true,
          active: true,
          socket: "/run/user/1000/banger/bangerd.sock",
          answers: true,
          detail: "bangerd answers",
        },
      },
    ],
  });

  // Plain root without --user: every user with a banger helper unit.
  const asRoot = makeDeps(root, { env: {} });
  assert.deepEqual(
    (await systemStatus(asRoot)).installs.map((i) => i.user),
    ["alice"],
  );
  // The user themselves: --user scope without -M.
  const asAlice = makeDeps(root, { env: {}, euid: 1000 });
  await systemStatus(asAlice);
  assert.ok(asAlice.systemctl.calls.includes("--user is-enabled bangerd.service"));
});

test("status without systemd reports unknown enabled/active and asks no systemctl", async () => {
  const root = await makeRoot({ systemd: false });
  const deps = makeDeps(root);
  await installSystem(deps, { noStart: true });
  const status = await systemStatus(deps);
  assert.equal(status.systemdRunning, false);
  assert.equal(status.installs[0]?.helper.installed, true);
  assert.equal(status.installs[0]?.helper.enabled, null);
  assert.equal(status.installs[0]?.daemon.active, null);
  assert.deepEqual(deps.systemctl.calls, []);
});

test("systemd-analyze verify accepts the generated units", async (t) => {
  const probe = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    t.skip("systemd-analyze is not installed");
    console.log("# skipped systemd-analyze verify: systemd-analyze is not installed");
    return;
  }
  const dir = await fs.mkdtemp(path.join(tmp, "verify-"));
  const runtime = path.join(dir, "runtime");
  await fs.mkdir(runtime, { mode: 0o700 });
  const paths = { nodePath: process.execPath, installDir: checkout };
  const helper = path.join(dir, "banger-helper-alice.service");
  const daemon = path.join(dir, "bangerd.service");
  await fs.writeFile(
    helper,
    helperUnit("alice", paths, { bridge: "banger0", subnet: "172.30.0.0/24" }),
  );
  await fs.writeFile(daemon, daemonUnit("alice", paths));
  for (const [args, file] of [
    [["verify", helper], helper],
    [["--user", "verify", daemon], daemon],
  ] as const) {
    // --user needs a runtime dir of its own; warnings about our file are failures too.
    const r = spawnSync("systemd-analyze", args, {
      encoding: "utf8",
      env: { ...process.env, XDG_RUNTIME_DIR: runtime },
      timeout: 60_000,
    });
    assert.equal(r.status, 0, `systemd-analyze ${args.join(" ")}: ${r.stderr}`);
    const ours = r.stderr.split("\n").filter((l) => l.includes(path.basename(file)));
    assert.deepEqual(ours, [], `systemd-analyze complained:\n${r.stderr}`);
  }
});

test("each user's helper gets its own bridge and subnet; a clash is refused; a re-install keeps them", async () => {
  const root = await makeRoot({ systemd: true });
  await installSystem(makeDeps(root));
  const bobDeps = makeDeps(root, { env: { SUDO_USER: "bob" } });
  await installSystem(bobDeps);
  const bobUnit = path.join(root, "etc/systemd/system/banger-helper-bob.service");
  assert.match(
    await fs.readFile(bobUnit, "utf8"),
    / --user bob --bridge banger1 --subnet 172\.30\.1\.0\/24$/m,
  );
  assert.ok(bobDeps.said.includes("helper for bob: bridge banger1, subnet 172.30.1.0/24"));
  // Asking for alice's bridge, or a subnet overlapping hers, is refused before anything is written.
  const carol = makeDeps(root, { env: { SUDO_USER: "bob" } });
  await rejectsWith(
    installSystem(carol, { bridge: "banger0", subnet: "172.30.9.0/24" }),
    /alice's banger-helper already has bridge banger0 with subnet 172\.30\.0\.0\/24/,
    /pass another --bridge and --subnet/,
  );
  await rejectsWith(
    installSystem(carol, { bridge: "banger9", subnet: "172.30.0.0/16" }),
    /alice's banger-helper already has/,
  );
  await rejectsWith(installSystem(carol, { subnet: "8.8.8.0/24" }), /not a private \(RFC 1918\)/);
  assert.deepEqual(carol.systemctl.mutations(), []);
  // Running it again keeps bob's values; asking for new free ones rewrites the unit.
  await installSystem(makeDeps(root, { env: { SUDO_USER: "bob" } }));
  assert.match(await fs.readFile(bobUnit, "utf8"), /--bridge banger1 --subnet 172\.30\.1\.0\/24$/m);
  await installSystem(makeDeps(root, { env: { SUDO_USER: "bob" } }), {
    bridge: "banger-bob",
    subnet: "10.77.0.0/24",
  });
  assert.match(
    await fs.readFile(bobUnit, "utf8"),
    /--bridge banger-bob --subnet 10\.77\.0\.0\/24$/m,
  );
});

test("install never picks a subnet the host already uses, and refuses one asked for", async () => {
  const root = await makeRoot({ systemd: true });
  // The host has Docker-like networks on 172.30.0.0/24 and 172.30.1.0/24: the helper would refuse them.
  const hostSubnetClash = async (_bridge: string, subnet: string) =>
    subnet === "172.30.0.0/24" || subnet === "172.30.1.0/24"
      ? `it overlaps a network this host already uses (address ${subnet} on docker0)`
      : null;
  const deps = makeDeps(root, { hostSubnetClash });
  await installSystem(deps);
  assert.match(
    await fs.readFile(helperPath(root), "utf8"),
    / --user alice --bridge banger2 --subnet 172\.30\.2\.0\/24$/m,
  );
  const asked = makeDeps(root, { hostSubnetClash, env: { SUDO_USER: "bob" } });
  await rejectsWith(
    installSystem(asked, { bridge: "banger7", subnet: "172.30.1.0/24" }),
    /bob's banger-helper could not start with subnet 172\.30\.1\.0\/24: .*docker0/,
    /pass a free private --subnet/,
  );
  assert.deepEqual(asked.systemctl.mutations(), []);
});
