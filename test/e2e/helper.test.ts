import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { HelperClient } from "../../src/net/helper-client.js";
import { natTable } from "../../src/net/privileged.js";
import { ensureBuilt } from "../helpers/build.js";
import { assertTapsAccountedFor, bridgeTaps as tapsOn } from "../helpers/bridge-taps.js";
import { bangerBin, bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { processesNaming, vmmPids } from "../helpers/procs.js";
import { sharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// The real path: bin/banger-helper as root on a temp socket, and a daemon that is
// not root (uid 65534 through setpriv) using it for bridge networking. One VM.
// Bridge, subnet and DNS port are this file's own: vm-lifecycle uses banger0.
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const banger = path.join(root, "bin", "banger");
const BRIDGE = "banger-t5";
const VM = "h5-1";
const NOBODY = 65534;
const POOL = 2;
const isRoot = process.getuid?.() === 0;

let home: TempLayout;
/** Where the daemon's user runs banger from: the checkout, or a readable copy of it (below). */
let install = root;
/** `banger` as the daemon's user, from where that user can read it. */
const asDaemonUser = (cmd: string, args: string[]) =>
  asUser(daemonUid, cmd === bangerBin ? path.join(install, "bin", "banger") : cmd, args);
const { cli, ok } = bangerCli(() => home.env, asDaemonUser);
let socketDir = "";
let socket: string;
let helper: ChildProcess | null = null;
let helperLog = "";
/** The daemon's uid: nobody when it may open /dev/net/tun, else root with the helper forced. */
let daemonUid = NOBODY;

function asUser(uid: number, cmd: string, args: string[]): [string, string[]] {
  if (uid === 0) return [cmd, args];
  return ["setpriv", [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", "--", cmd, ...args]];
}

const bridgeTaps = () => tapsOn(BRIDGE);

async function until<T>(what: string, fn: () => Promise<T | null>, ms = 60_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await fn();
    if (value !== null) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000}s`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function canOpenTunAs(uid: number): Promise<boolean> {
  const [cmd, args] = asUser(uid, "sh", ["-c", "exec 3<>/dev/net/tun"]);
  return run(cmd, args).then(
    () => true,
    () => false,
  );
}

/** Whether `uid` can load what it runs from `dir`: the CLI, the daemon and the helper. */
async function canLoadAs(uid: number, dir: string): Promise<boolean> {
  const entries = ["cli/main.js", "daemon/main.js", "net/helper-main.js"].map((f) =>
    JSON.stringify(path.join(dir, "dist", f)),
  );
  const script = entries.map((e) => `await import(${e});`).join(" ");
  const [cmd, args] = asUser(uid, process.execPath, ["--input-type=module", "-e", script]);
  return run(cmd, args, { cwd: "/", timeout: 60_000 }).then(
    () => true,
    () => false,
  );
}

/**
 * The daemon's user (and the "must run as root" check) run banger from the checkout when they
 * can read it. A checkout under a 0700 directory (a home directory, often) they cannot: then a
 * copy in a temp dir they can read, everything in it a+rX, node_modules linked where its real
 * directory is readable and copied where it is not.
 */
async function readableInstall(): Promise<string> {
  if (await canLoadAs(NOBODY, root)) return root;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-helper-install-"));
  try {
    await fs.chmod(dir, 0o755);
    for (const part of ["bin", "dist", "catalog", "guest-scripts", "package.json"])
      await fs.cp(path.join(root, part), path.join(dir, part), { recursive: true });
    const modules = await fs.realpath(path.join(root, "node_modules"));
    await fs.symlink(modules, path.join(dir, "node_modules"));
    await run("chmod", ["-R", "a+rX", dir]);
    if (!(await canLoadAs(NOBODY, dir))) {
      await fs.rm(path.join(dir, "node_modules"));
      await fs.cp(modules, path.join(dir, "node_modules"), { recursive: true });
      await run("chmod", ["-R", "a+rX", dir]);
    }
    if (!(await canLoadAs(NOBODY, dir)))
      throw new Error(`uid ${NOBODY} cannot load banger even from a readable copy at ${dir}`);
  } catch (err) {
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
  console.log(
    `# uid ${NOBODY} cannot read the checkout ${root}: its side runs from a readable copy at ${dir}`,
  );
  return dir;
}

/** bangerd processes started for this home (their environment names it). */
async function daemonsOfHome(): Promise<number[]> {
  const ours: number[] = [];
  for (const entry of await fs.readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (!cmdline.includes("bangerd")) continue;
    const env = await fs.readFile(`/proc/${entry}/environ`, "utf8").catch(() => "");
    if (env.split("\0").includes(`BANGER_HOME=${home.home}`)) ours.push(Number(entry));
  }
  return ours;
}

before(async () => {
  if (!isRoot) return;
  await ensureBuilt(root);
  install = await readableInstall();
  home = await tempLayout("banger-helper-e2e-");
  await fs.mkdir(home.layout.configDir, { recursive: true });
  await fs.writeFile(
    home.layout.configFile,
    `[network]\nbridge = "${BRIDGE}"\nsubnet = "172.31.55.0/24"\ndns_port = 5354\ntap_pool_size = ${POOL}\n`,
  );
  // Kernel and image prepared as root in user-mode networking (cheap when the dev home
  // exists; built from scratch otherwise), then the whole home handed to the daemon's user.
  const prep = { ...home.env, BANGER_NETWORK: "user" };
  const bangerAsRoot = (...args: string[]) =>
    run(banger, args, { env: prep, timeout: 900_000 }).catch((err: { stderr?: string }) => {
      throw new Error(`banger ${args.join(" ")}: ${err.stderr ?? String(err)}`);
    });
  const shared = await sharedDefaultImage(home.env);
  if (shared) {
    await bangerAsRoot("kernel", "import", "debian-cloud", "--from", shared.kernelDir);
    // A registered image stays where it is, and the shared home is root's alone: use a sparse copy.
    const rootfs = path.join(home.home, "rootfs.ext4");
    await run("cp", ["--sparse=always", "--reflink=auto", shared.rootfs, rootfs]);
    await bangerAsRoot(
      "image",
      "register",
      "--rootfs",
      rootfs,
      "--name",
      "debian-bookworm",
      "--kernel-ref",
      "debian-cloud",
    );
  } else {
    await bangerAsRoot("vm", "create", "--name", "h5-prep", "--no-start", "--disk-size", "1G");
    await bangerAsRoot("vm", "delete", "h5-prep");
  }
  await bangerAsRoot("daemon", "stop");

  if (!(await canOpenTunAs(NOBODY))) {
    daemonUid = 0;
    home.env.BANGER_PRIVILEGED = "helper";
    console.log(
      "# /dev/net/tun does not open for uid 65534 here: the daemon runs as root with BANGER_PRIVILEGED=helper",
    );
  }
  await run("chown", ["-R", `${daemonUid}:${daemonUid}`, home.home]);
  await fs.chmod(home.home, 0o700);
  delete home.env.BANGER_NETWORK;
  home.env.HOME = home.home;

  // The socket's directory: root's, traversable by the served user.
  socketDir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-helper-sock-"));
  await fs.chmod(socketDir, 0o755);
  // The helper creates the last directory itself, as it does for /run/banger-helper.
  socket = path.join(socketDir, "run", "helper.sock");
  home.env.BANGER_HELPER_SOCKET = socket;
  helper = spawn(
    path.join(root, "bin", "banger-helper"),
    [
      "--user",
      String(daemonUid),
      "--bridge",
      BRIDGE,
      "--subnet",
      "172.31.55.0/24",
      "--socket",
      socket,
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  helper.stderr!.on("data", (c: Buffer) => (helperLog += c.toString("utf8")));
  await until("banger-helper answers", async () =>
    (await new HelperClient(socket, { timeoutMs: 2_000 }).reachable()) ? true : null,
  );
});

after(async () => {
  if (!isRoot) return;
  // The helper stays up until the daemon (which needs it to give its taps back) has gone.
  await cleanupE2eHome(home, {
    wrap: asDaemonUser,
    bridges: [BRIDGE],
    nftTables: [natTable(BRIDGE)],
    extra: [() => helper?.kill("SIGKILL")],
    paths: [...(socketDir ? [socketDir] : []), ...(install !== root ? [install] : [])],
  });
});

test(
  "a daemon that is not root (where /dev/net/tun allows) boots a bridged VM through banger-helper, with a pool tap",
  { timeout: 900_000, skip: isRoot ? false : "starting banger-helper needs root" },
  async () => {
    const st = await fs.stat(socket);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, daemonUid, "the socket belongs to the user it serves");
    const [cmd, args] = asUser(65533, process.execPath, [
      "-e",
      `require("net").connect(${JSON.stringify(socket)}).on("connect", () => { console.log("connected"); process.exit(0); }).on("error", (e) => { console.log(e.code); process.exit(0); })`,
    ]);
    assert.equal((await run(cmd, args)).stdout.trim(), "EACCES", "another user cannot connect");

    // The real helper refuses what is not banger's, and eth0-like devices survive it.
    const direct = new HelperClient(socket);
    await assert.rejects(direct.deleteTap("eth0"), /not one of banger's devices/);
    await assert.rejects(
      direct.createTap("bg-aaaaaaaaaaaa", BRIDGE, 12345),
      /this helper serves uid/,
    );
    assert.doesNotMatch((await run("ip", ["tuntap", "show"])).stdout, /bg-aaaaaaaaaaaa/);
    // It serves only its pinned bridge and subnet: no host route, no masquerading the world.
    await assert.rejects(
      direct.ensureBridge(BRIDGE, "8.8.8.8/1"),
      /serves only bridge banger-t5 with subnet 172\.31\.55\.0\/24/,
    );
    await assert.rejects(direct.ensureNat("0.0.0.0/0", BRIDGE), /serves only bridge banger-t5/);
    await assert.rejects(direct.removeNat("banger-other"), /serves only bridge banger-t5/);
    assert.doesNotMatch(
      (await run("ip", ["-4", "route", "show"])).stdout,
      /^0\.0\.0\.0\/1 |8\.8\.8\.8/m,
    );
    const [asNobody, nobodyArgs] = asUser(NOBODY, path.join(install, "bin", "banger-helper"), [
      "--user",
      "nobody",
      "--socket",
      path.join(socketDir, "x.sock"),
    ]);
    const notRoot = await run(asNobody, nobodyArgs).then(
      () => "",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    assert.match(notRoot, /banger-helper must run as root/);

    const doctor = JSON.parse((await cli("doctor", "--json")).stdout) as {
      checks: Array<{ name: string; status: string; detail: string }>;
    };
    const check = doctor.checks.find((c) => c.name === "helper");
    assert.equal(check?.status, "ok", JSON.stringify(check));
    assert.match(
      check!.detail,
      /banger-helper answers at .*helper\.sock \(serves uid \d+, bridge banger-t5, subnet 172\.31\.55\.0\/24\)/,
    );

    // Starting the daemon fills the pool before any VM asks for a tap.
    await ok("vm", "list");
    const pool = await until(`the pool holds ${POOL} idle taps`, async () => {
      const taps = await bridgeTaps();
      return taps.length === POOL && taps.every((t) => t.idle) ? taps.map((t) => t.name) : null;
    });
    const owners = (await run("ip", ["tuntap", "show"])).stdout;
    for (const tap of pool)
      assert.match(owners, new RegExp(`^${tap}: tap .*user ${daemonUid}\\b`, "m"));

    await ok("vm", "create", "--name", VM, "--memory", "768M", "--disk-size", "1G");
    const info = JSON.parse((await ok("vm", "show", VM, "--json")).stdout) as {
      id: string;
      ip: string;
    };
    assert.match(info.ip, /^172\.31\.55\.\d+$/);
    const handles = JSON.parse(
      await fs.readFile(path.join(home.layout.vmsDir, info.id, "handles.json"), "utf8"),
    ) as { tap: string; sshHost: string; sshPort: number; pid: number };
    assert.ok(pool.includes(handles.tap), `tap ${handles.tap} came from the pool [${pool}]`);
    assert.deepEqual(
      [handles.sshHost, handles.sshPort],
      [info.ip, 22],
      "SSH at the bridge address",
    );
    const status = await fs.readFile(`/proc/${handles.pid}/status`, "utf8");
    assert.match(
      status,
      new RegExp(`^Uid:\\s+${daemonUid}\\s`, "m"),
      "QEMU runs as the daemon's user",
    );

    const inGuest = await ok("vm", "ssh", VM, "--", "sh", "-c", "hostname; ip -4 -o addr show");
    assert.match(inGuest.stdout, new RegExp(`^${VM}\\n`));
    assert.ok(inGuest.stdout.includes(`inet ${info.ip}/24`), inGuest.stdout);
    const log = await fs.readFile(home.layout.daemonLogFile, "utf8");
    assert.match(log, /privileged steps through banger-helper/);
    await until("the pool is refilled", async () =>
      (await bridgeTaps()).filter((t) => t.idle).length === POOL ? true : null,
    );
    await assertTapsAccountedFor(BRIDGE, [handles.tap], POOL, "with the VM running");

    await ok("vm", "delete", VM);
    assert.deepEqual(await vmmPids(home.home), [], "no VMM of this home after delete");
    await assertTapsAccountedFor(BRIDGE, [], POOL, "after delete");
    await ok("daemon", "stop");
    await until("the daemon's stop removes its idle taps", async () =>
      (await bridgeTaps()).length === 0 ? true : null,
    );

    helper!.kill("SIGTERM");
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => resolve(null), 30_000);
      helper!.once("exit", (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    assert.equal(code, 0, `banger-helper exits cleanly on SIGTERM:\n${helperLog}`);
    helper = null;
    await assert.rejects(fs.stat(socket), /ENOENT/, "the helper removes its socket");
    assert.deepEqual(
      (await processesNaming(socketDir)).map((p) => p.cmd),
      [],
      "no helper on this socket is left",
    );
    assert.deepEqual(await daemonsOfHome(), [], "no daemon of this home is left");
    // What the helper did, as its log tells: every operation on banger's own devices.
    assert.match(helperLog, /"method":"createTap"/);
    assert.equal(
      (helperLog.match(/refused or failed/g) ?? []).length,
      5,
      "only the five refusals above were refused",
    );
  },
);
