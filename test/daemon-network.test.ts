// A real bangerd (as root, bridge networking) and the host's real ip and nft: a bridge that
// cannot be set up is said in `vm show` and `doctor`, not silently replaced by user-mode
// networking; `daemon stop` takes its bridge, taps and NAT table with it. Own bridge names
// (bangersw, bangerswbad), subnet 172.31.77.0/26 (the rest of 172.31.77.0/24 is
// test/tap-pool.test.ts's and test/net.test.ts's, which may run at once) and a high DNS port:
// never banger0 or port 53.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, test, type TestContext } from "node:test";
import { promisify } from "node:util";
import { bangerCli } from "./helpers/cli.js";
import { ensureBuilt } from "./helpers/build.js";
import { cleanupE2eHome } from "./helpers/e2e-cleanup.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, "..");
const SUBNET = "172.31.77.0/26";
const cleanups: Array<() => Promise<unknown>> = [];
after(async () => {
  for (const fn of cleanups.reverse()) await fn().catch(() => undefined);
});

async function canBridge(t: TestContext): Promise<boolean> {
  const tun = await fs.open("/dev/net/tun", "r+").then(
    (h) => h.close().then(() => true),
    () => false,
  );
  if (process.getuid?.() === 0 && tun) return true;
  t.skip("needs root and /dev/net/tun: bridge networking makes real links");
  return false;
}

async function freeUdpPort(): Promise<number> {
  // A TCP port free on loopback is as good a guess as any for the UDP responder's.
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const linkExists = (name: string) =>
  run("ip", ["link", "show", "dev", name]).then(
    () => true,
    () => false,
  );
const tapsOn = async (bridge: string) =>
  [
    ...(
      await run("ip", ["-o", "link", "show", "master", bridge]).catch(() => ({ stdout: "" }))
    ).stdout.matchAll(/^\d+: (bg-[0-9a-f]+)[@:]/gm),
  ].map((m) => m[1]!);
const nftTableExists = (table: string) =>
  run("nft", ["list", "table", "ip", table]).then(
    () => true,
    () => false,
  );

/** A home with bridge networking on `bridge`, a tiny registered image and kernel. */
async function bridgedHome(bridge: string, extraEnv: NodeJS.ProcessEnv = {}) {
  await ensureBuilt(root);
  const home = await tempLayout("banger-brnet-");
  const env: NodeJS.ProcessEnv = { ...home.env, ...extraEnv };
  delete env.BANGER_NETWORK;
  await fs.mkdir(home.layout.configDir, { recursive: true });
  await fs.writeFile(
    home.layout.configFile,
    [
      "[network]",
      `bridge = "${bridge}"`,
      `subnet = "${SUBNET}"`,
      `dns_port = ${await freeUdpPort()}`,
      "tap_pool_size = 2",
      "[timeouts]",
      // The tiny image never boots: a start gives up on SSH soon.
      'ssh_wait = "3s"',
      'stop = "2s"',
      "",
    ].join("\n"),
  );
  cleanups.push(() => cleanupE2eHome(home, { bridges: [bridge], nftTables: [`banger_${bridge}`] }));
  const cli = bangerCli(() => env);
  const rootfs = path.join(home.home, "tiny.ext4");
  await run("truncate", ["-s", "8M", rootfs]);
  await run("mkfs.ext4", ["-q", "-F", rootfs]);
  // Not a bootable kernel: these tests need a VM row (and a start that fails fast), not a guest.
  const kernel = path.join(home.home, "vmlinuz");
  await fs.writeFile(kernel, Buffer.alloc(4096, 7));
  await cli.ok("image", "register", "--name", "tiny", "--rootfs", rootfs, "--kernel", kernel);
  return { home, env, ...cli };
}

test(
  "bridge set-up failing is visible: vm show (and --json), daemon status and doctor say what failed and what to do",
  { timeout: 120_000 },
  async (t) => {
    if (!(await canBridge(t))) return;
    // The configured bridge's name is taken by a tap: banger refuses to make it its bridge.
    const bad = "bangerswbad";
    await run("ip", ["link", "del", bad]).catch(() => undefined);
    await run("ip", ["tuntap", "add", "dev", bad, "mode", "tap"]);
    cleanups.push(() => run("ip", ["link", "del", bad]));
    const { ok, cli } = await bridgedHome(bad);

    await ok("vm", "create", "--name", "nb", "--image", "tiny", "--no-start");
    const shown = JSON.parse((await ok("vm", "show", "nb", "--json")).stdout) as {
      network?: { mode: string; problem: string | null; hint: string | null };
    };
    assert.equal(shown.network?.mode, "user");
    assert.match(
      shown.network?.problem ?? "",
      /bridge set-up failed: refusing to use "bangerswbad" as banger's bridge: it exists and is not a bridge/,
    );
    assert.match(shown.network?.hint ?? "", /ip link del bangerswbad/);
    assert.match(shown.network?.hint ?? "", /banger daemon stop/);
    const text = (await ok("vm", "show", "nb")).stdout;
    assert.match(text, /^network:\s+user-mode, because bridge set-up failed/m);
    assert.match(text, /^fix:\s+.*ip link del bangerswbad/m);

    const status = JSON.parse((await ok("daemon", "status", "--json")).stdout) as {
      network?: { mode: string; problem: string | null };
    };
    assert.equal(status.network?.mode, "user");
    assert.match(status.network?.problem ?? "", /bridge set-up failed/);

    const doctor = await cli("doctor", "--json");
    assert.equal(doctor.code, 1, "a failed check makes doctor exit 1");
    const check = (
      JSON.parse(doctor.stdout) as {
        checks: Array<{ name: string; status: string; detail: string; fix?: string }>;
      }
    ).checks.find((c) => c.name === "bridge");
    assert.equal(check?.status, "fail");
    assert.match(check?.detail ?? "", /refusing to use "bangerswbad".*user-mode networking/);
    assert.match(check?.fix ?? "", /ip link del bangerswbad/);
    // The failed set-up left nothing: the tap is still just a tap, no NAT table.
    assert.deepEqual(await tapsOn(bad), []);
    assert.equal(await nftTableExists(`banger_${bad}`), false);
    await ok("daemon", "stop");
    assert.ok(await linkExists(bad), "banger never removes a device it did not make its bridge");
  },
);

test(
  "a helper that is asked for and does not answer is a failure doctor names, not a silent fall-back",
  { timeout: 120_000 },
  async (t) => {
    if (!(await canBridge(t))) return;
    const { cli } = await bridgedHome("bangersw", {
      BANGER_PRIVILEGED: "helper",
      BANGER_HELPER_SOCKET: "/nonexistent/banger-helper.sock",
    });
    await cli("daemon", "start");
    const doctor = await cli("doctor", "--json");
    const check = (
      JSON.parse(doctor.stdout) as {
        checks: Array<{ name: string; status: string; detail: string; fix?: string }>;
      }
    ).checks.find((c) => c.name === "bridge");
    assert.equal(check?.status, "fail");
    assert.match(check?.detail ?? "", /bridge networking is not available: .*banger-helper/);
    assert.match(check?.fix ?? "", /banger doctor|docs\/helper\.md/);
    assert.equal(await linkExists("bangersw"), false, "nothing was set up");
  },
);

test(
  "daemon stop removes the bridge, its pool taps and the NAT table (no VM running)",
  { timeout: 180_000 },
  async (t) => {
    if (!(await canBridge(t))) return;
    const bridge = "bangersw";
    const table = `banger_${bridge}`;
    for (const stale of [bridge]) await run("ip", ["link", "del", stale]).catch(() => undefined);
    const { ok, cli } = await bridgedHome(bridge);
    await ok("daemon", "start");
    const pool = await (async () => {
      for (let i = 0; i < 200; i++) {
        const taps = await tapsOn(bridge);
        if (taps.length === 2) return taps;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.fail(`the pool never filled: ${(await tapsOn(bridge)).join(", ")}`);
    })();
    // A --nat start puts the NAT table in place before the VMM runs; this one's kernel is no
    // kernel, so SSH never answers (3 s here) and the create fails; the table stays until the
    // daemon goes.
    const create = await cli("vm", "create", "--name", "natvm", "--image", "tiny", "--nat");
    assert.notEqual(create.code, 0, "a start with a kernel that is not one fails");
    assert.ok(await nftTableExists(table), "NAT was set up");
    assert.ok(await linkExists(bridge));
    // Nothing is running: drop the failed VM, then stop the daemon.
    await cli("vm", "delete", "natvm");
    await ok("daemon", "stop");
    assert.equal(await nftTableExists(table), false, "the NAT table went with the daemon");
    for (const tap of pool) assert.equal(await linkExists(tap), false, `pool tap ${tap} removed`);
    assert.equal(await linkExists(bridge), false, "the bridge went with the daemon");
  },
);
