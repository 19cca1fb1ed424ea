import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { hostIpv4Addresses } from "../../src/net/frame-filter.js";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { outsideWorld, type OutsideWorld } from "../helpers/outside-world.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// What a user-mode guest (the test default, BANGER_NETWORK=user) can reach on the host,
// with and without --nat, on real VMs (QEMU microvm, TCG). Two VMs, shared by every check.
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const ISOLATED = "bnd-isolated";
const NAT = "bnd-nat";
let home: TempLayout;
const { ok } = bangerCli(() => home.env);

/** TCP servers on the host that count who got through: one on loopback only, one on every address. */
const servers: Array<{ server: net.Server; port: number; host: string; accepted: number }> = [];
let world: OutsideWorld | null = null;

async function listen(host: string) {
  const entry = { server: net.createServer(), port: 0, host, accepted: 0 };
  entry.server.on("connection", (c) => {
    entry.accepted++;
    c.on("error", () => {});
    c.end("host\n");
  });
  await new Promise<void>((r) => entry.server.listen(0, host, r));
  entry.port = (entry.server.address() as net.AddressInfo).port;
  servers.push(entry);
  return entry;
}

/** Processes whose command line names the test home (VMMs, passt, the filter). */
async function helpersOfHome(): Promise<string[]> {
  const r = await run("ps", ["-eo", "pid,args"]);
  return r.stdout.split("\n").filter((l) => l.includes(home.home) && !/bangerd|\bps\b/.test(l));
}

/** From the host: the first line a local server sends. */
async function dial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, "127.0.0.1");
    let got = "";
    c.setTimeout(5_000, () => c.destroy(new Error(`127.0.0.1:${port}: no answer`)));
    c.on("data", (d: Buffer) => (got += d.toString()));
    c.on("end", () => resolve(got.trim()));
    c.on("error", reject);
  });
}

/** In the guest: "open" when a TCP connection to host:port succeeds within 4 s, else "closed". */
async function probe(vm: string, host: string, port: number): Promise<string> {
  return (await probeAll(vm, [`${host}:${port}`])).get(`${host}:${port}`) ?? "no answer";
}

/** Probes every host:port from the guest in one SSH call (they run in parallel there). */
async function probeAll(vm: string, targets: string[]): Promise<Map<string, string>> {
  const script = targets
    .map((t) => {
      const [h, p] = t.split(":");
      return `(timeout 4 bash -c 'exec 3<>/dev/tcp/${h}/${p}' 2>/dev/null && echo "${t} open" || echo "${t} closed") &`;
    })
    .concat("wait")
    .join("\n");
  const r = await ok("vm", "ssh", vm, "--", "bash", "-c", script);
  return new Map(
    r.stdout
      .trim()
      .split("\n")
      .map((l) => l.split(" ") as [string, string]),
  );
}

/** The console log's files, together. */
async function consoleBytes(id: string): Promise<number> {
  let total = 0;
  for (const f of ["console.log", "console.log.1"])
    total += (await fs.stat(path.join(home.layout.vmsDir, id, f)).catch(() => null))?.size ?? 0;
  return total;
}

const vmId = async (name: string) =>
  (JSON.parse((await ok("vm", "show", name, "--json")).stdout) as { id: string }).id;

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-bnd-");
  await useSharedDefaultImage(home);
  await fs.mkdir(path.dirname(home.layout.configFile), { recursive: true });
  await fs.writeFile(home.layout.configFile, `console_log_size = "1M"\n`);
  await listen("127.0.0.1");
  await listen("0.0.0.0");
  if (process.getuid?.() === 0) world = await outsideWorld();
  // Booted side by side: the boot is not what this file tests.
  await Promise.all([
    ok("vm", "create", "--name", ISOLATED, "--memory", "1G", "--disk-size", "1G"),
    ok("vm", "create", "--name", NAT, "--nat", "--memory", "1G", "--disk-size", "1G"),
  ]);
});

after(async () => {
  await cleanupE2eHome(home, {
    extra: [...servers.map((s) => () => s.server.close()), () => world?.close()],
  });
});

test(
  "a user-mode guest reaches no host service, with or without --nat",
  { timeout: 600_000 },
  async () => {
    // 10.0.2.2 is slirp's alias for the host's 127.0.0.1; the others are the host's own addresses.
    const hosts = ["10.0.2.2", ...[...hostIpv4Addresses()].filter((a) => !a.startsWith("127."))];
    const targets = hosts.flatMap((h) => servers.map((s) => `${h}:${s.port}`));
    // The servers count a connection (the host's own), so the zero below means none got through.
    for (const s of servers) {
      assert.equal(await dial(s.port), "host", `the server on ${s.host} answers the host`);
      assert.equal(s.accepted, 1, `the server on ${s.host} counted the host's connection`);
      s.accepted = 0;
    }
    // The guest's own sshd: the probe can say "open", so its "closed" means closed.
    const control = "127.0.0.1:22";
    for (const vm of [ISOLATED, NAT]) {
      const got = await probeAll(vm, [control, ...targets]);
      assert.equal(got.get(control), "open", `${vm}: the probe reaches the guest's own sshd`);
      for (const t of targets) assert.equal(got.get(t), "closed", `${vm} → ${t}`);
    }
    // A root guest writes frames itself: SYNs to 127.0.0.1 and 0.0.0.0, past its own routing.
    const forge = Buffer.from(
      await fs.readFile(path.join(root, "test/e2e/fixtures/forge-syn.pl")),
    ).toString("base64");
    // One SSH call per VM, every destination in it; each forge run says what it sent.
    const sends = ["127.0.0.1", "0.0.0.0"].flatMap((dst) =>
      servers.map((s) => `perl /tmp/forge.pl ${dst} ${s.port}`),
    );
    for (const vm of [ISOLATED, NAT]) {
      const r = await ok(
        "vm",
        "ssh",
        vm,
        "--",
        "bash",
        "-c",
        [`set -e`, `echo ${forge} | base64 -d > /tmp/forge.pl`, ...sends].join("\n"),
      );
      assert.equal(
        r.stdout.match(/sent 3 SYNs/g)?.length,
        sends.length,
        `${vm}: every forge run sent its SYNs:\n${r.stdout}`,
      );
    }
    await new Promise((r) => setTimeout(r, 2000));
    for (const s of servers) assert.equal(s.accepted, 0, `server on ${s.host} was reached`);
  },
);

test(
  "--nat gives egress to the outside world, without it there is none",
  { timeout: 600_000 },
  async (t) => {
    const route = await ok("vm", "ssh", NAT, "--", "ip", "-4", "route", "show", "default");
    assert.match(route.stdout, /default via 10\.0\.2\.2/);
    if (!world) {
      t.skip("the outside world needs root to build (a netns and a veth)");
      return;
    }
    const fetch = `timeout 8 bash -c 'exec 3<>/dev/tcp/${world.address}/${world.port}; head -1 <&3'`;
    assert.equal((await ok("vm", "ssh", NAT, "--", "bash", "-c", fetch)).stdout.trim(), "outside");
    assert.equal(await probe(ISOLATED, world.address, world.port), "closed");
  },
);

test(
  "passt and the filter survive a daemon restart and go with the VM",
  { timeout: 600_000 },
  async () => {
    const row = JSON.parse((await ok("vm", "show", NAT, "--json")).stdout) as { id: string };
    const handlesFile = path.join(home.layout.vmsDir, row.id, "handles.json");
    const handles = JSON.parse(await fs.readFile(handlesFile, "utf8")) as {
      userNet?: { passtPid: number; relayPid: number };
    };
    assert.ok(handles.userNet, "handles.json records the helpers");
    const alive = (pid: number) =>
      fs.readFile(`/proc/${pid}/cmdline`, "utf8").then(
        (c) => c.length > 0,
        () => false,
      );
    assert.ok(await alive(handles.userNet.passtPid));
    assert.ok(await alive(handles.userNet.relayPid));
    const isolatedHandles = JSON.parse(
      await fs.readFile(
        path.join(
          home.layout.vmsDir,
          (JSON.parse((await ok("vm", "show", ISOLATED, "--json")).stdout) as { id: string }).id,
          "handles.json",
        ),
        "utf8",
      ),
    ) as { userNet?: unknown };
    assert.equal(isolatedHandles.userNet ?? null, null, "no helpers without --nat");

    // The daemon goes (kill -9) and comes back: the VM, its SSH forward and its egress stay.
    const daemonPid = Number.parseInt(await fs.readFile(home.layout.pidFile, "utf8"), 10);
    process.kill(daemonPid, "SIGKILL");
    for (let i = 0; i < 100 && (await alive(daemonPid)); i++)
      await new Promise((r) => setTimeout(r, 50));
    assert.equal((await ok("vm", "ssh", NAT, "--", "echo", "still")).stdout.trim(), "still");
    // The new daemon took the console back: what the guest prints now is recorded.
    await ok("vm", "ssh", NAT, "--", "bash", "-c", "echo console-after-restart > /dev/ttyS0");
    let seen = false;
    for (let i = 0; i < 50 && !seen; i++) {
      seen = (await ok("vm", "logs", NAT)).stdout.includes("console-after-restart");
      if (!seen) await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(seen, "console output after the daemon restart is in the log");
    if (world) {
      const fetch = `timeout 8 bash -c 'exec 3<>/dev/tcp/${world.address}/${world.port}; head -1 <&3'`;
      assert.equal(
        (await ok("vm", "ssh", NAT, "--", "bash", "-c", fetch)).stdout.trim(),
        "outside",
      );
    }
    await ok("vm", "stop", NAT);
    assert.equal(await alive(handles.userNet.passtPid), false, "passt stopped with the VM");
    assert.equal(await alive(handles.userNet.relayPid), false, "the filter stopped with the VM");
    const left = (await helpersOfHome()).filter((l) => l.includes(row.id));
    assert.deepEqual(left, [], "nothing of the stopped VM runs");
  },
);

test(
  "a guest flooding its serial console leaves at most console_log_size on disk",
  { timeout: 600_000 },
  async () => {
    const id = await vmId(ISOLATED);
    // 3 MiB through the guest's UART: six rotations of the 1 MiB bound (the UART does
    // ~90 KiB/s under TCG here, so more would only cost time).
    const flood = `timeout 300 sh -c 'head -c 3M /dev/zero | tr "\\000" x > /dev/ttyS0'; echo done`;
    const t0 = Date.now();
    assert.equal(
      (await ok("vm", "ssh", ISOLATED, "--", "bash", "-c", flood)).stdout.trim(),
      "done",
    );
    const seconds = (Date.now() - t0) / 1000;
    const bytes = await consoleBytes(id);
    assert.ok(bytes <= 1024 * 1024, `${bytes} bytes of console on disk (bound 1 MiB)`);
    assert.ok(bytes >= 512 * 1024, `${bytes}: the newest half at least`);
    const logs = await ok("vm", "logs", ISOLATED);
    assert.ok(logs.stdout.length <= 1024 * 1024, "vm logs prints at most the bound");
    assert.ok(logs.stdout.endsWith("xxxx"), "and the newest output");
    process.stdout.write(`# 3 MiB to ttyS0 in ${seconds.toFixed(1)} s; ${bytes} bytes kept\n`);
  },
);
