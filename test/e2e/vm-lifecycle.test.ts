import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";

// Real VMs under QEMU microvm with TCG, driven through the real bin/banger, on the run's
// shared default kernel and image (test/image-build.test.ts checks the first run that built them).
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
const { cli, ok } = bangerCli(() => home.env);

async function qemuPids(name: string): Promise<number[]> {
  const r = await run("pgrep", ["-f", `qemu-system-x86_64 -name banger-${name} `]).catch(() => ({
    stdout: "",
  }));
  return r.stdout.split("\n").filter(Boolean).map(Number);
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
  if (process.getuid?.() === 0) delete home.env.BANGER_NETWORK;
  // The frozen VM's stop ends with a kill at this deadline (30 s by default).
  await fs.mkdir(path.dirname(home.layout.configFile), { recursive: true });
  await fs.writeFile(home.layout.configFile, '[timeouts]\nstop = "10s"\n');
  await useSharedDefaultImage(home);
});

/** banger's taps on banger0 that a VM holds open: idle pool taps (no reader) show NO-CARRIER. */
async function bangerTaps(): Promise<string[]> {
  const r = await run("ip", ["-o", "link", "show", "master", "banger0"]).catch(() => ({
    stdout: "",
  }));
  return r.stdout
    .split("\n")
    .filter((line) => !line.includes("NO-CARRIER"))
    .flatMap((line) => /^\d+: (bg-[0-9a-f]+)[@:]/.exec(line)?.[1] ?? []);
}

after(async () => {
  for (const name of ["e2e", "idle1", "idle2", "peer-a", "peer-b"])
    for (const pid of await qemuPids(name)) process.kill(pid, "SIGKILL");
  await cli("daemon", "stop");
  await home.cleanup();
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
    const [vmDir] = await fs.readdir(home.layout.vmsDir);
    const du = await run("du", ["-sk", path.join(home.layout.vmsDir, vmDir!)]);
    assert.ok(Number.parseInt(du.stdout, 10) < 200 * 1024, `VM dir is ${du.stdout.trim()} KiB`);

    await ok("vm", "stop", "e2e");
    assert.deepEqual(await qemuPids("e2e"), []);
    assert.match((await ok("vm", "show", "e2e")).stdout, /state:\s+stopped/);
    await ok("vm", "start", "e2e");
    assert.equal((await qemuPids("e2e")).length, 1);
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

    // The VMM outlives the daemon; a fresh daemon adopts it.
    await killDaemon();
    assert.equal((await ok("vm", "ssh", "e2e", "--", "echo", "adopted")).stdout.trim(), "adopted");

    // Lost handles.json: the teardown identity in the store still finds the VM.
    await fs.writeFile(path.join(home.layout.vmsDir, vmDir!, "handles.json"), "{ not json");
    await killDaemon();
    assert.equal(
      (await ok("vm", "ssh", "e2e", "--", "echo", "still-here")).stdout.trim(),
      "still-here",
    );

    // A guest that ignores shutdown (its VMM frozen): stop ends with a kill at the deadline.
    const [frozen] = await qemuPids("e2e");
    process.kill(frozen!, "SIGSTOP");
    await ok("vm", "stop", "e2e");
    assert.deepEqual(await qemuPids("e2e"), []);
    assert.match((await ok("vm", "show", "e2e")).stdout, /state:\s+stopped/);

    await ok("vm", "delete", "e2e");
    assert.deepEqual(await qemuPids("e2e"), []);
    assert.deepEqual(await bangerTaps(), [], "no tap left in use (idle pool taps may stay)");
    assert.deepEqual(await fs.readdir(home.layout.vmsDir), []);
    const knownHosts = await fs
      .readFile(path.join(home.layout.sshDir, "known_hosts"), "utf8")
      .catch(() => "");
    assert.doesNotMatch(knownHosts, /e2e\.vm/, "the host key is forgotten");
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
    assert.notEqual(
      list.find((v) => v.name === "peer-a")?.ip,
      list.find((v) => v.name === "peer-b")?.ip,
    );
    const b = list.find((v) => v.name === "peer-b")!;
    assert.match(b.ip, /^172\.30\.0\.\d+$/);
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
    assert.deepEqual(await bangerTaps(), []);
  },
);
