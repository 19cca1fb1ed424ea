import assert from "node:assert/strict";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import {
  identityLine,
  sendIdentity,
  startIdentityReader,
  type GuestIdentity,
} from "../src/guest/identity.js";
import { loadGuestScripts } from "../src/guest/scripts.js";
import { GuestShell } from "../src/guest/shell.js";
import type { GuestTarget } from "../src/guest/ssh.js";
import {
  guestRoot,
  OLD_MACHINE_ID,
  StandInGuest,
  standInSkip,
  type GuestOptions,
} from "./helpers/identity-guest.js";

// The identity channel: the host side against a unix socket server standing in for QEMU's
// chardev, and guest-scripts/identity.sh in a stand-in guest (test/helpers/identity-guest.ts).

const SEED = "0f".repeat(32);
const clone: GuestIdentity = {
  hostname: "web-1",
  ip: "172.30.0.7/24",
  gw: "172.30.0.1",
  dns: "172.30.0.1",
  mac: "52:54:0a:0b:0c:0d",
  epochSeconds: 1764630000,
  seedHex: SEED,
  clone: true,
};
const LINE =
  "banger-identity v1 hostname=web-1 ip=172.30.0.7/24 gw=172.30.0.1 dns=172.30.0.1 " +
  `mac=52:54:0a:0b:0c:0d epoch=1764630000 seed=${SEED} clone=yes`;

// First: a top-level await after the hooks would let `after` run before the later tests.
const skip = await standInSkip();
let dir: string;
/** Closed or ended after the tests, whatever an assertion left open. */
const cleanups: Array<() => Promise<void>> = [];
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-identity-"));
});
after(async () => {
  await Promise.all(cleanups.map((c) => c()));
  await fs.rm(dir, { recursive: true, force: true });
});

test("the v1 line: every value in its pattern, `-` for a value kept; anything else is never sent", () => {
  assert.equal(identityLine(clone), LINE);
  assert.equal(
    identityLine({ ...clone, ip: null, gw: null, dns: null, mac: null, clone: false }),
    `banger-identity v1 hostname=web-1 ip=- gw=- dns=- mac=- epoch=1764630000 seed=${SEED} clone=no`,
  );
  const bad: Array<[string, Partial<GuestIdentity>]> = [
    ["hostname", { hostname: "$(reboot)" }],
    ["hostname", { hostname: "Web" }],
    ["hostname", { hostname: "a b" }],
    ["hostname", { hostname: "-web" }],
    ["hostname", { hostname: "a".repeat(64) }],
    ["ip", { ip: "10.0.0.300/24" }],
    ["ip", { ip: "10.0.0.3" }],
    ["ip", { ip: "10.0.0.3/33" }],
    ["ip", { ip: "10.0.0.3/24 clone=no" }],
    ["gw", { gw: "10.0.0.01" }],
    ["dns", { dns: "::1" }],
    ["mac", { mac: "52:54:0A:0B:0C:0D" }],
    ["mac", { mac: "53:54:0a:0b:0c:0d" }],
    ["mac", { mac: "52:54:0a:0b:0c" }],
    ["epoch", { epochSeconds: 1.5 }],
    ["epoch", { epochSeconds: 0 }],
    ["epoch", { epochSeconds: 1e12 }],
    ["seed", { seedHex: "0f".repeat(31) }],
    ["seed", { seedHex: "0F".repeat(32) }],
  ];
  for (const [field, change] of bad)
    assert.throws(
      () => identityLine({ ...clone, ...change }),
      (err: unknown) =>
        err instanceof BangerError &&
        err.code === ErrorCode.Internal &&
        err.message.includes(`identity's ${field} is not valid`),
      JSON.stringify(change),
    );
});

/** A unix socket server standing in for QEMU's chardev: `reply` answers each line it reads. */
async function fakeChannel(
  reply: (line: string, socket: net.Socket) => void,
  opts: { listenAfterMs?: number } = {},
): Promise<{ path: string; lines: string[]; close: () => Promise<void> }> {
  const sock = path.join(await fs.mkdtemp(path.join(dir, "sock-")), "identity.sock");
  const lines: string[] = [];
  const open = new Set<net.Socket>();
  const server = net.createServer((s) => {
    open.add(s);
    s.on("close", () => open.delete(s));
    let buf = "";
    s.on("data", (c: Buffer) => {
      buf += c.toString("utf8");
      const end = buf.indexOf("\n");
      if (end >= 0) {
        lines.push(buf.slice(0, end));
        reply(buf.slice(0, end), s);
      }
    });
    s.on("error", () => {});
  });
  const listen = () => new Promise<void>((r) => server.listen(sock, r));
  const listening = opts.listenAfterMs
    ? new Promise<void>((r) => setTimeout(() => void listen().then(r), opts.listenAfterMs))
    : listen();
  if (!opts.listenAfterMs) await listening;
  let closed: Promise<void> | null = null;
  const close = () =>
    (closed ??= listening.then(
      () =>
        new Promise<void>((r) => {
          for (const s of open) s.destroy();
          server.close(() => r());
        }),
    ));
  cleanups.push(close);
  return { path: sock, lines, close };
}

const rejectsWith = (re: RegExp) => (err: unknown) =>
  err instanceof BangerError && err.code === ErrorCode.Internal && re.test(err.message);

test("sendIdentity: resolves on ok, after the VMM makes its socket; the line is the v1 line", async () => {
  const ch = await fakeChannel((_line, s) => s.end("ok\n"), { listenAfterMs: 300 });
  await sendIdentity(ch.path, clone, 10_000);
  assert.deepEqual(ch.lines, [LINE]);
  await ch.close();
});

test("sendIdentity: the guest's error is its reason, escaped; garbage, a close and silence are errors", async () => {
  const hostile = "error \x1b]52;c;cGF3bmVk\x07\u202eboom\rX";
  const ch = await fakeChannel((_line, s) => s.end(`${hostile}\n`));
  await assert.rejects(sendIdentity(ch.path, clone, 10_000), (err: unknown) => {
    assert.ok(err instanceof BangerError);
    assert.match(
      err.message,
      /could not take its new identity: \\x1b\]52;c;cGF3bmVk\\x07\\u202eboom\\rX$/,
    );
    assert.doesNotMatch(err.message, /[\x00-\x1f\u202e]/);
    return true;
  });
  await ch.close();

  const garbage = await fakeChannel((_line, s) => s.end("okay then\n"));
  await assert.rejects(
    sendIdentity(garbage.path, clone, 10_000),
    rejectsWith(/neither ok nor error: okay then/),
  );
  await garbage.close();

  const endless = await fakeChannel((_line, s) => s.write("o".repeat(4096)));
  await assert.rejects(
    sendIdentity(endless.path, clone, 10_000),
    rejectsWith(/ran past 1024 bytes/),
  );
  await endless.close();

  const closes = await fakeChannel((_line, s) => s.end());
  await assert.rejects(
    sendIdentity(closes.path, clone, 10_000),
    rejectsWith(/closed its identity channel without answering/),
  );
  await closes.close();

  const silent = await fakeChannel(() => {});
  await assert.rejects(
    sendIdentity(silent.path, clone, 500),
    rejectsWith(/did not answer its new identity within 1s/),
  );
  await silent.close();

  const nowhere = path.join(dir, "no-such.sock");
  await assert.rejects(
    sendIdentity(nowhere, clone, 500),
    rejectsWith(/identity channel .*no-such\.sock did not open within 1s/),
  );
});

test("sendIdentity: a value that fails its pattern is refused before anything connects", async () => {
  const ch = await fakeChannel((_line, s) => s.end("ok\n"));
  await assert.rejects(
    sendIdentity(ch.path, { ...clone, hostname: "x;reboot" }, 2_000),
    (err: unknown) => err instanceof BangerError && /hostname is not valid/.test(err.message),
  );
  assert.deepEqual(ch.lines, []);
  await ch.close();
});

// The guest side. The stand-in runs the daemon's own start command (startIdentityReader through
// GuestShell, its ssh replaced by the stand-in's init), then gets the line through the port.
const scripts = loadGuestScripts();
const target: GuestTarget = {
  vmId: "vm-1",
  vmName: "web-1",
  host: "127.0.0.1",
  port: 22,
  identity: { privateKey: "/nonexistent", publicKey: "", knownHosts: "/nonexistent" },
};

async function boot(opts: GuestOptions): Promise<StandInGuest> {
  const guest = new StandInGuest(await guestRoot(dir, opts), opts);
  cleanups.push(() => guest.kill());
  await startIdentityReader(new GuestShell(guest.runner), target, scripts);
  return guest;
}

/** A clone's line with the host's clock: the reader reads the clock back (strace answers the set). */
const now = () => Math.floor(Date.now() / 1000);
const lineAt = (epoch: number, change: Partial<GuestIdentity> = {}) =>
  identityLine({ ...clone, epochSeconds: epoch, ...change });

test(
  "a clone under sshd: clock, entropy, machine-id, host keys, MAC, address, name, and sshd HUPed",
  { skip },
  async () => {
    const guest = await boot({ server: "sshd", init: "banger" });
    await guest.ready();
    const pids = (await guest.read("tmp/pids")).trim().split("\n");
    assert.equal(pids.length, 2);
    assert.equal(pids[0], pids[1], "the second start found the first reader and started none");
    assert.equal((await guest.read("tmp/again")).trim(), "again 0");

    const epoch = now();
    assert.equal(await guest.tell(lineAt(epoch)), "ok");
    await guest.done();
    assert.deepEqual(await guest.syscalls(), [
      'sethostname("old-name", 8) = 0',
      `clock_settime(CLOCK_REALTIME, {tv_sec=${epoch}, tv_nsec=0}) = 0 (INJECTED)`,
      'sethostname("web-1", 5) = 0',
    ]);
    const calls = await guest.calls();
    assert.equal(calls.length, 3, calls.join("\n"));
    assert.match(calls[0]!, /^perl -e .*ioctl\(\$f, 0x5207, 0\)/);
    assert.equal(calls[1], "ssh-keygen -q -t ed25519 -N  -f /etc/ssh/ssh_host_ed25519_key.new");
    assert.equal(calls[2], "server exited 129", "sshd got SIGHUP");
    const state = await guest.state();
    assert.match(state, /link\/ether 52:54:0a:0b:0c:0d /);
    assert.match(state, /inet 172\.30\.0\.7\/24 /);
    assert.match(state, /^default via 172\.30\.0\.1 dev eth0/m);
    assert.match(state, /^web-1$/m);
    assert.equal(await guest.read("dev/urandom"), `${SEED}\n`);
    const machineId = (await guest.read("etc/machine-id")).trim();
    assert.match(machineId, /^[0-9a-f]{32}$/);
    assert.notEqual(machineId, OLD_MACHINE_ID);
    assert.equal(await guest.read("etc/ssh/ssh_host_ed25519_key"), "new-key\n");
    assert.equal(await guest.read("etc/ssh/ssh_host_ed25519_key.pub"), "new-key.pub\n");
    await assert.rejects(guest.read("etc/ssh/ssh_host_rsa_key"), "no other host key is left");
    assert.equal(await guest.read("etc/hostname"), "web-1\n");
    assert.equal(await guest.read("etc/resolv.conf"), "nameserver 172.30.0.1\nsearch vm\n");
    await assert.rejects(guest.read("run/banger/identity.pid"), "the reader removed its pidfile");
  },
);

test(
  "the VM that was saved, resumed (clone=no, network kept): clock, entropy and name only",
  { skip },
  async () => {
    const guest = await boot({ server: "sshd", init: "banger" });
    const epoch = now();
    const line = lineAt(epoch, { ip: null, gw: null, dns: null, mac: null, clone: false });
    assert.equal(await guest.tell(line), "ok");
    await guest.done();
    assert.equal(
      (await guest.syscalls())[1],
      `clock_settime(CLOCK_REALTIME, {tv_sec=${epoch}, tv_nsec=0}) = 0 (INJECTED)`,
    );
    const calls = await guest.calls();
    assert.deepEqual(calls.slice(1), ["server alive"], "no keys made, sshd left alone");
    assert.match(calls[0]!, /^perl /);
    assert.doesNotMatch(await guest.state(), /inet |default via/);
    assert.equal(await guest.read("etc/machine-id"), `${OLD_MACHINE_ID}\n`);
    assert.equal(await guest.read("etc/ssh/ssh_host_ed25519_key"), "old-key\n");
  },
);

test(
  "a clock that does not take is an error, and the rest is still applied",
  { skip },
  async () => {
    const guest = await boot({ server: "sshd", init: "banger" });
    // strace answers the set; the clock read back is an hour off the line's.
    assert.equal(await guest.tell(lineAt(now() + 3600)), "error could not apply: clock");
    await guest.done();
    assert.match(await guest.state(), /inet 172\.30\.0\.7\/24 /);
  },
);

test(
  "dropbear: restarted by banger's init, by the reader under an image's init, by systemd",
  { skip },
  async () => {
    const run = async (init: GuestOptions["init"]) => {
      const guest = await boot({ server: "dropbear", init });
      const answer = await guest.tell(lineAt(now()));
      await guest.done();
      const calls = await guest.calls();
      assert.ok(
        calls.includes("dropbearkey -t ed25519 -f /var/lib/banger/dropbear_ed25519_host_key.new"),
      );
      assert.equal(await guest.read("var/lib/banger/dropbear_ed25519_host_key"), "new-key\n");
      return { answer, calls: calls.filter((c) => /^(server|ssh-server|systemctl)/.test(c)) };
    };
    const [banger, image, systemd, oldUnit] = await Promise.all([
      run("banger"),
      run("image"),
      run({ systemd: "process" }),
      run({ systemd: "control-group" }),
    ]);
    assert.deepEqual(
      banger,
      { answer: "ok", calls: ["server exited 143"] },
      "its loop starts it again",
    );
    assert.deepEqual(image, { answer: "ok", calls: ["server exited 143", "ssh-server "] });
    assert.deepEqual(systemd, {
      answer: "ok",
      calls: [
        "systemctl show -p KillMode --value banger-ssh.service",
        "systemctl restart banger-ssh.service",
        "server alive",
      ],
    });
    assert.match(
      oldUnit.answer,
      /^error could not apply: ssh server: banger-ssh\.service of an older banger/,
    );
    assert.deepEqual(oldUnit.calls, [
      "systemctl show -p KillMode --value banger-ssh.service",
      "server alive",
    ]);
  },
);

test("a malformed line applies nothing and is answered error", { skip }, async () => {
  const LINE_NOW = lineAt(now());
  const words = LINE_NOW.split(" ");
  const lines: Array<[string, RegExp]> = [
    [LINE_NOW.replace("hostname=web-1", "hostname=$(reboot)"), /hostname is not a DNS label/],
    [LINE_NOW.replace("hostname=web-1", "hostname=`reboot`"), /hostname is not a DNS label/],
    [LINE_NOW.replace("172.30.0.7/24", "172.30.0.300/24"), /ip is not an IPv4 address/],
    [LINE_NOW.replace("172.30.0.7/24", "172.30.0.7"), /ip is not an IPv4 address/],
    [LINE_NOW.replace("gw=172.30.0.1", "gw=172.30.0.1;reboot"), /gw is not an IPv4 address/],
    [LINE_NOW.replace("mac=52:54:0a", "mac=53:54:0a"), /mac is not a unicast MAC/],
    [LINE_NOW.replace(/ seed=[0-9a-f]+/, ""), /10 words expected, got 9/],
    [LINE_NOW.replace(`seed=${SEED}`, `seed=${SEED.slice(2)}`), /seed is not 64 hex digits/],
    [LINE_NOW.replace(/epoch=\d+/, "epoch=-1"), /epoch is not a time/],
    [LINE_NOW.replace(" ip=", "  ip="), /not separated by single spaces/],
    [LINE_NOW.replace(" ip=", "\tip="), /10 words expected, got 9/],
    [
      [...words.slice(0, 3), words[4], words[3], ...words.slice(5)].join(" "),
      /expected ip= as word 4/,
    ],
    [LINE_NOW.replace("v1", "v2"), /not a banger-identity v1 line/],
    [`${LINE_NOW} *`, /10 words expected, got 11/],
    [LINE_NOW.replace("clone=yes", "clone=maybe"), /clone is neither yes nor no/],
    [`${LINE_NOW}${"x".repeat(600)}`, /longer than 512 bytes/],
  ];
  await Promise.all(
    lines.map(async ([line, why]) => {
      const guest = await boot({ server: "sshd", init: "banger" });
      const answer = await guest.tell(line);
      await guest.done();
      assert.match(answer, /^error /, line);
      assert.match(answer, why, line);
      assert.deepEqual(await guest.syscalls(), ['sethostname("old-name", 8) = 0'], line);
      assert.deepEqual(await guest.calls(), ["server alive"], line);
      assert.doesNotMatch(await guest.state(), /inet |default via/, line);
      assert.equal(await guest.read("dev/urandom"), "");
      assert.equal(await guest.read("etc/machine-id"), `${OLD_MACHINE_ID}\n`);
      assert.equal(await guest.read("etc/hostname"), "old-name\n");
      assert.equal(await guest.read("etc/ssh/ssh_host_ed25519_key"), "old-key\n");
    }),
  );
});

test(
  "a VM with no banger.identity port: startIdentityReader says to restart it",
  { skip },
  async () => {
    const opts: GuestOptions = { server: "sshd", init: "banger", port: false };
    const guest = new StandInGuest(await guestRoot(dir, opts), opts);
    cleanups.push(() => guest.kill());
    await assert.rejects(
      startIdentityReader(new GuestShell(guest.runner), target, scripts),
      (err: unknown) =>
        err instanceof BangerError &&
        err.code === ErrorCode.Precondition &&
        /VM web-1 was booted before warm start support/.test(
          err.hint === undefined ? "" : err.message,
        ) &&
        /banger vm stop web-1 && banger vm start web-1/.test(err.hint ?? ""),
    );
    await guest.done();
  },
);
