import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";
import { ensureBuilt } from "../helpers/build.js";
import { assertTapsAccountedFor, bridgeTaps } from "../helpers/bridge-taps.js";
import { bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { vmmPids } from "../helpers/procs.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";

// Real VMs under QEMU microvm with TCG, driven through the real bin/banger, on the run's
// shared default kernel and image (test/image-build.test.ts checks the first run that built them).
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
const { cli, ok } = bangerCli(() => home.env);
// As root the VMs use the default bridge (banger0) and its default pool of 2 idle taps.
const bridged = process.getuid?.() === 0;
const BRIDGE = "banger0";
const POOL = 2;
/** What this file made on the host that nobody had before it (removed in `after`). */
const made = { bridge: false, nat: false };

/** A VM's directory under this home. */
async function vmDirOf(name: string): Promise<string> {
  const { id } = JSON.parse((await ok("vm", "show", name, "--json")).stdout) as { id: string };
  return path.join(home.layout.vmsDir, id);
}

/** The VMM of the VM in `vmDir`, by its pid file (null when none runs). */
async function vmmOf(vmDir: string): Promise<number | null> {
  const pid = Number.parseInt(
    await fs.readFile(path.join(vmDir, "qemu.pid"), "utf8").catch(() => ""),
    10,
  );
  return (await vmmPids(vmDir)).includes(pid) ? pid : null;
}

/** The tap a running VM holds, from its handles.json. */
async function tapOf(vmDir: string): Promise<string> {
  const handles = JSON.parse(await fs.readFile(path.join(vmDir, "handles.json"), "utf8")) as {
    tap?: string;
  };
  assert.ok(handles.tap, `${vmDir}: a bridged VM has a tap`);
  return handles.tap;
}

/** Bridged: every bg- tap on banger0 is a running VM's or an idle pool tap (see bridge-taps.ts). */
async function tapsAccountedFor(inUse: string[], what: string): Promise<void> {
  if (bridged) await assertTapsAccountedFor(BRIDGE, inUse, POOL, what);
}

async function daemonPid(): Promise<number> {
  return Number.parseInt(await fs.readFile(home.layout.pidFile, "utf8"), 10);
}

async function killDaemon(): Promise<void> {
  const pid = await daemonPid();
  process.kill(pid, "SIGKILL");
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-");
  // As root, exercise bridge networking (taps, addresses, the .vm DNS responder); else user-mode.
  if (bridged) {
    delete home.env.BANGER_NETWORK;
    // banger0 is also the user's default bridge: only what was not there before is removed.
    made.bridge = !(await run("ip", ["link", "show", BRIDGE]).then(
      () => true,
      () => false,
    ));
    made.nat = !(await run("nft", ["list", "table", "ip", "banger_banger0"]).then(
      () => true,
      () => false,
    ));
  }
  // The frozen VM's stop ends with a kill at this deadline (30 s by default).
  await fs.mkdir(path.dirname(home.layout.configFile), { recursive: true });
  await fs.writeFile(home.layout.configFile, '[timeouts]\nstop = "10s"\n');
  await useSharedDefaultImage(home);
});

after(async () => {
  await cleanupE2eHome(home, {
    bridges: made.bridge ? [BRIDGE] : [],
    nftTables: made.nat ? ["banger_banger0"] : [],
  });
});

test(
  "create → ssh → stop → start → daemon kill -9 → corrupt handles → delete leaves nothing",
  { timeout: 900_000 },
  async () => {
    const created = await ok(
      "vm",
      "create",
      "--name",
      "e2e",
      "--memory",
      "1G",
      "--disk-size",
      "2G",
    );
    assert.equal(created.stdout.trim(), "e2e");
    assert.match(created.stderr, /spec: \d+ vcpu · 1024 MiB · 2G disk/);

    // The remote command's output and exit status come back through OpenSSH.
    const ssh = await cli(
      "vm",
      "ssh",
      "e2e",
      "--",
      "sh",
      "-c",
      "cat /etc/hostname; test -d /root/.ssh && exit 3",
    );
    assert.equal(ssh.code, 3, ssh.stderr);
    assert.equal(ssh.stdout.trim(), "e2e");

    // Copy-on-write: the VM's disks cost little next to the image.
    const vmDir = await vmDirOf("e2e");
    assert.deepEqual(await fs.readdir(home.layout.vmsDir), [path.basename(vmDir)]);
    const du = await run("du", ["-sk", vmDir]);
    assert.ok(Number.parseInt(du.stdout, 10) < 200 * 1024, `VM dir is ${du.stdout.trim()} KiB`);
    const firstVmm = await vmmOf(vmDir);
    assert.ok(firstVmm, "the VM's pid file names its running VMM");
    assert.deepEqual(await vmmPids(home.home), [firstVmm], "one VMM for this home");
    if (bridged) await tapsAccountedFor([await tapOf(vmDir)], "after create");

    await ok("vm", "stop", "e2e");
    assert.deepEqual(await vmmPids(home.home), [], "no VMM of this home after stop");
    assert.match((await ok("vm", "show", "e2e")).stdout, /state:\s+stopped/);
    await tapsAccountedFor([], "after stop");
    await ok("vm", "start", "e2e");
    const vmm = await vmmOf(vmDir);
    assert.ok(vmm && vmm !== firstVmm, "a new VMM runs, named by the pid file");
    assert.deepEqual(await vmmPids(home.home), [vmm]);
    const tap = bridged ? await tapOf(vmDir) : "";
    await tapsAccountedFor(bridged ? [tap] : [], "after start");
    assert.match((await ok("vm", "health", "e2e")).stdout, /e2e: VMM running, SSH answers/);
    const stats = JSON.parse((await ok("vm", "stats", "e2e", "--json")).stdout) as {
      rssBytes: number;
      overlayBytes: number;
    };
    assert.ok(stats.rssBytes > 0 && stats.overlayBytes > 0, JSON.stringify(stats));
    const ports = JSON.parse((await ok("vm", "ports", "e2e", "--json")).stdout) as Array<{
      proto: string;
      port: number;
    }>;
    assert.ok(
      ports.some((p) => p.proto === "tcp" && p.port === 22),
      JSON.stringify(ports),
    );

    // The VMM outlives the daemon; a fresh daemon adopts it (and the killed daemon's pool taps:
    // at most a pool's worth stays).
    await killDaemon();
    assert.equal((await ok("vm", "ssh", "e2e", "--", "echo", "adopted")).stdout.trim(), "adopted");
    assert.deepEqual(await vmmPids(home.home), [vmm], "the same VMM, adopted");
    await tapsAccountedFor(bridged ? [tap] : [], "after a daemon kill -9");

    // Lost handles.json: the teardown identity in the store still finds the VM.
    await fs.writeFile(path.join(vmDir, "handles.json"), "{ not json");
    await killDaemon();
    assert.equal(
      (await ok("vm", "ssh", "e2e", "--", "echo", "still-here")).stdout.trim(),
      "still-here",
    );
    assert.deepEqual(await vmmPids(home.home), [vmm], "the same VMM, found without handles.json");
    await tapsAccountedFor(bridged ? [tap] : [], "after a kill -9 with handles.json lost");

    // A guest that ignores shutdown (its VMM frozen): stop ends with a kill at the deadline.
    process.kill(vmm, "SIGSTOP");
    await ok("vm", "stop", "e2e");
    assert.deepEqual(await vmmPids(home.home), [], "the frozen VMM was killed");
    assert.match((await ok("vm", "show", "e2e")).stdout, /state:\s+stopped/);
    await tapsAccountedFor([], "after the frozen VM's stop");

    // banger's known_hosts pins the VM's key under e2e.vm (in clear: banger never hashes it).
    const knownHosts = path.join(home.layout.sshDir, "known_hosts");
    const pinned = await run("ssh-keygen", ["-F", "e2e.vm", "-f", knownHosts]);
    assert.match(pinned.stdout, /^e2e\.vm ssh-ed25519 /m, "the host key is pinned, in clear");

    await ok("vm", "delete", "e2e");
    assert.deepEqual(await vmmPids(home.home), []);
    await tapsAccountedFor([], "after delete");
    assert.deepEqual(await fs.readdir(home.layout.vmsDir), []);
    const forgotten = await run("ssh-keygen", ["-F", "e2e.vm", "-f", knownHosts]).then(
      (r) => ({ code: 0, stdout: r.stdout }),
      (err: { code?: number; stdout?: string }) => ({ code: err.code, stdout: err.stdout ?? "" }),
    );
    assert.deepEqual(forgotten, { code: 1, stdout: "" }, "the host key is forgotten");
    assert.match((await cli("vm", "show", "e2e")).stderr, /no VM named "e2e"/);
  },
);

test("bad input gives a clear error and leaves nothing behind", { timeout: 300_000 }, async () => {
  await ok("vm", "create", "--name", "idle1", "--no-start", "--disk-size", "1G");
  const cases: Array<[string[], RegExp]> = [
    [["--name", "idle1"], /a VM named "idle1" already exists/],
    [["--name", "Bad_Name"], /invalid VM name "Bad_Name"/],
    [["--name", "x1", "--image", "no-such-image"], /no image named "no-such-image"/],
    [["--name", "x2", "--memory", "128M"], /memory: 128 MiB is below the floor of 256 MiB/],
    [["--name", "x3", "--vcpu", "0"], /invalid --vcpu "0"/],
    [["--name", "x4", "--memory", "lots"], /invalid size "lots"/],
  ];
  for (const [args, pattern] of cases) {
    const r = await cli("vm", "create", ...args);
    assert.equal(r.code, 1, args.join(" "));
    assert.match(r.stderr, pattern);
  }
  const list = JSON.parse((await ok("vm", "list", "--json")).stdout) as Array<{ name: string }>;
  assert.deepEqual(
    list.map((v) => v.name).filter((n) => /^(x\d|Bad_Name)$/.test(n)),
    [],
    "no VM from the failed creates",
  );
  assert.equal(
    (await fs.readdir(home.layout.vmsDir)).length,
    list.length,
    "no directory from the failed creates",
  );
});

test("prune deletes every VM that is not running", { timeout: 300_000 }, async () => {
  await ok("vm", "create", "--name", "idle2", "--no-start", "--disk-size", "1G");
  const refused = await cli("vm", "prune");
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /needs confirmation/);
  const pruned = await ok("vm", "prune", "--force");
  assert.match(pruned.stdout, /deleted idle1/);
  assert.match(pruned.stdout, /deleted idle2/);
  assert.deepEqual(JSON.parse((await ok("vm", "list", "--json")).stdout), []);
  assert.deepEqual(await fs.readdir(home.layout.vmsDir), []);
});

test(
  "two VMs resolve each other's <name>.vm through the responder and connect",
  {
    timeout: 600_000,
    skip: process.getuid?.() !== 0 ? "bridge networking needs root here" : false,
  },
  async () => {
    // Created in parallel: lifecycle operations on different VMs do not wait for each other,
    // and the two starts must not be handed the same address.
    await Promise.all([
      ok("vm", "create", "--name", "peer-a", "--memory", "768M", "--disk-size", "1G", "--nat"),
      ok("vm", "create", "--name", "peer-b", "--memory", "768M", "--disk-size", "1G"),
    ]);
    // --nat: the bridge's own nftables table masquerades the subnet (egress itself is not tested: no internet here).
    const nat = await run("nft", ["list", "table", "ip", "banger_banger0"]).catch(
      (err: { stderr?: string }) => ({
        stdout: err.stderr ?? "",
      }),
    );
    assert.match(nat.stdout, /ip saddr 172\.30\.0\.0\/24 oifname != "banger0" masquerade/);

    const list = JSON.parse((await ok("vm", "list", "--json")).stdout) as Array<{
      name: string;
      ip: string;
    }>;
    const a = list.find((v) => v.name === "peer-a");
    const b = list.find((v) => v.name === "peer-b");
    assert.ok(a && b, JSON.stringify(list));
    assert.match(a.ip, /^172\.30\.0\.\d+$/);
    assert.match(b.ip, /^172\.30\.0\.\d+$/);
    assert.notEqual(a.ip, b.ip);
    const peerTaps = [await tapOf(await vmDirOf("peer-a")), await tapOf(await vmDirOf("peer-b"))];
    await tapsAccountedFor(peerTaps, "with two VMs running");
    const script =
      'getent hosts peer-b.vm; bash -c "exec 3<>/dev/tcp/peer-b.vm/22; head -c 7 <&3"; echo; getent hosts ghost.vm || echo nxdomain';
    const probe = await ok("vm", "ssh", "peer-a", "--", "sh", "-c", script);
    const [hosts, banner, missing] = probe.stdout.trim().split("\n");
    assert.deepEqual(hosts?.trim().split(/\s+/), [b.ip, "peer-b.vm"]);
    assert.match(banner ?? "", /^SSH-2\.0/);
    assert.equal(missing, "nxdomain");
    // `ssh <name>.vm` through banger's ssh config (its ProxyCommand asks bangerd where the VM is).
    const sshConfig = path.join(home.home, "ssh_config");
    await fs.writeFile(sshConfig, (await ok("ssh-config", "--print")).stdout);
    const viaConfig = await run(
      "ssh",
      ["-F", sshConfig, "-o", "BatchMode=yes", "peer-b.vm", "hostname"],
      { env: home.env, timeout: 60_000 },
    );
    assert.equal(viaConfig.stdout.trim(), "peer-b");
    await ok("vm", "delete", "peer-a", "peer-b");
    assert.deepEqual(await vmmPids(home.home), []);
    await tapsAccountedFor([], "after deleting both");
  },
);

test(
  "daemon stop leaves no banger tap on the bridge",
  {
    timeout: 120_000,
    skip: bridged ? false : "bridge networking needs root here",
  },
  async () => {
    await ok("vm", "list"); // a daemon, with its pool filled, even when the tests above were skipped
    await ok("daemon", "stop");
    const deadline = Date.now() + 30_000;
    let left = await bridgeTaps(BRIDGE);
    while (left.length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      left = await bridgeTaps(BRIDGE);
    }
    assert.deepEqual(left, [], "every idle pool tap goes with the daemon");
  },
);
