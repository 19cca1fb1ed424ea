import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ResponseError } from "vscode-jsonrpc/node.js";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { rawRequest as rawJsonRpc } from "./helpers/raw-rpc.js";
import { HelperClient } from "../src/net/helper-client.js";
import { HelperServer } from "../src/net/helper-server.js";
import { makePin } from "../src/net/pin.js";
import { createRootOps } from "../src/net/privileged.js";
import { createCommandRunner } from "../src/system/runner.js";
import { pinnedNetwork, privilegedOpsFor, probePrivileged } from "../src/net/privileged-mode.js";
import { ensureBuilt } from "./helpers/build.js";
import { fakeOps, type FakeOps } from "./helpers/fake-ops.js";

const run = promisify(execFile);

// A real helper server on a temp socket, in-process, backed by a recording fake.
const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;
const quiet = { info: () => {}, error: () => {} };
const pin = makePin("banger-x", "172.31.77.0/24");
const otherPin = makePin("banger-y", "172.31.78.0/24");
let dir: string;
let socket: string;
let ops: FakeOps;
let server: HelperServer;
let client: HelperClient;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-helper-test-"));
  socket = path.join(dir, "helper.sock");
  ops = fakeOps();
  server = await HelperServer.start({ socketPath: socket, ops, uid, gid, pin, log: quiet });
  client = new HelperClient(socket, { timeoutMs: 10_000 });
});

after(async () => {
  await server.close();
  await fs.rm(dir, { recursive: true, force: true });
});

/** Speaks JSON-RPC to the socket directly, bypassing the typed client. */
const rawRequest = (method: string, params: unknown) => rawJsonRpc(socket, method, params);

async function rawError(method: string, params: unknown): Promise<ResponseError<unknown>> {
  try {
    await rawRequest(method, params);
  } catch (err) {
    assert.ok(err instanceof ResponseError, String(err));
    return err;
  }
  assert.fail(`${method} was not refused`);
}

test("the socket is mode 0600 and owned by the user it serves", async () => {
  const st = await fs.stat(socket);
  assert.ok(st.isSocket());
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(st.uid, uid);
});

test("the client round-trips every privileged operation", async () => {
  ops.calls.length = 0;
  assert.deepEqual(await client.ping(), {
    pong: true,
    uid,
    pid: process.pid,
    bridge: "banger-x",
    subnet: "172.31.77.0/24",
  });
  await client.ensureBridge("banger-x", "172.31.77.1/24");
  await client.createTap("bg-aaaaaaaaaaaa", "banger-x", uid);
  assert.deepEqual(await client.listTaps("banger-x"), [{ name: "bg-aaaaaaaaaaaa", ownerUid: uid }]);
  await client.deleteTap("bg-aaaaaaaaaaaa");
  await client.ensureNat("172.31.77.0/24", "banger-x");
  await client.removeNat("banger-x");
  await client.routeResolver("banger-x", "172.31.77.1");
  await client.unrouteResolver("banger-x");
  assert.deepEqual(ops.calls, [
    "ensureBridge banger-x 172.31.77.1/24",
    `createTap bg-aaaaaaaaaaaa banger-x ${uid}`,
    "listTaps banger-x",
    "deleteTap bg-aaaaaaaaaaaa",
    "ensureNat 172.31.77.0/24 banger-x",
    "removeNat banger-x",
    "routeResolver banger-x 172.31.77.1",
    "unrouteResolver banger-x",
  ]);
});

test("names without banger's prefix and malformed params are refused at the boundary", async () => {
  ops.calls.length = 0;
  const refused = async (p: Promise<unknown>, pattern: RegExp) =>
    assert.rejects(
      p,
      (err: unknown) =>
        err instanceof BangerError &&
        err.code === ErrorCode.InvalidParams &&
        pattern.test(err.message),
    );
  await refused(client.deleteTap("eth0"), /not one of banger's devices/);
  await refused(client.ensureBridge("docker0", "10.0.0.1/24"), /not one of banger's devices/);
  await refused(client.createTap("bg-ok", "br0", uid), /not one of banger's devices/);
  await refused(client.createTap("bg-waytoolongname", "banger0", uid), /not one of banger's/);
  await refused(client.createTap("bg-ok", "banger0", uid + 1), /this helper serves uid/);
  // These strings end up in an nft script and resolvectl arguments.
  await refused(
    client.ensureNat('10.0.0.0/24 accept; flush ruleset; "', "banger0"),
    /not an IPv4 CIDR/,
  );
  await refused(client.routeResolver("banger0", "1.2.3.4 extra"), /not an IPv4 address/);
  const extra = await rawError("deleteTap", { name: "bg-a", also: "rm -rf /" });
  assert.equal(extra.code, ErrorCode.InvalidParams);
  const positional = await rawError("deleteTap", ["bg-a"]);
  assert.equal(positional.code, ErrorCode.InvalidParams);
  assert.deepEqual(ops.calls, [], "nothing refused reached the privileged implementation");
});

test("unknown methods are refused", async () => {
  for (const method of ["runShell", "helper.exec", "__proto__"]) {
    const err = await rawError(method, { cmd: "id" });
    assert.equal(err.code, ErrorCode.MethodNotFound, method);
    assert.match(err.message, /banger-helper does not do .*; it serves only: ping, ensureBridge/);
  }
});

test("a failing operation comes back as an error, and the helper keeps serving", async () => {
  ops.failCreates = 1;
  await assert.rejects(client.createTap("bg-bbbbbbbbbbbb", "banger-x", uid), /no more taps today/);
  assert.equal((await client.ping()).pong, true);
});

test("one helper per socket; a dead helper's socket is replaced; close removes it", async () => {
  await assert.rejects(
    HelperServer.start({ socketPath: socket, ops: fakeOps(), uid, gid, pin, log: quiet }),
    /another banger-helper already serves/,
  );
  const other = path.join(dir, "stale.sock");
  // A socket file nobody listens on, as a killed helper leaves it.
  const child = spawn(
    process.execPath,
    [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(other)}, () => console.log("up"))`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise((resolve) => child.stdout.once("data", resolve));
  child.kill("SIGKILL");
  await new Promise((resolve) => child.once("exit", resolve));
  assert.ok((await fs.lstat(other)).isSocket(), "the killed listener left its socket file");
  const second = await HelperServer.start({
    socketPath: other,
    ops: fakeOps(),
    uid,
    gid,
    pin: otherPin,
    log: quiet,
  });
  assert.equal((await new HelperClient(other).ping()).pong, true);
  await second.close();
  await second.close();
  await assert.rejects(fs.stat(other), /ENOENT/, "close removes the socket");
});

test("the socket's directory must not be writable by others", async () => {
  const open = path.join(dir, "open");
  await fs.mkdir(open);
  await fs.chmod(open, 0o777);
  await assert.rejects(
    HelperServer.start({
      socketPath: path.join(open, "h.sock"),
      ops: fakeOps(),
      uid,
      gid,
      pin,
      log: quiet,
    }),
    /writable by no one else/,
  );
});

test("an absent helper is a clear error with a hint, and the probe says why", async () => {
  const missing = path.join(dir, "nobody-home.sock");
  await assert.rejects(
    new HelperClient(missing).deleteTap("bg-x"),
    (err: unknown) =>
      err instanceof BangerError &&
      /banger-helper is not reachable at .*nobody-home\.sock \(ENOENT\)/.test(err.message) &&
      /sudo banger-helper --user/.test(err.hint ?? ""),
  );
  const none = await probePrivileged({
    env: { BANGER_PRIVILEGED: "helper", BANGER_HELPER_SOCKET: missing },
    uid,
    configuredSocket: null,
  });
  assert.equal(none.mode, "none");
  const found = await probePrivileged({
    env: { BANGER_PRIVILEGED: "helper" },
    uid,
    configuredSocket: socket,
  });
  assert.deepEqual(found, {
    mode: "helper",
    socket,
    servedUid: uid,
    bridge: "banger-x",
    subnet: "172.31.77.0/24",
  });
  const wrongUser = await probePrivileged({
    env: { BANGER_PRIVILEGED: "helper", BANGER_HELPER_SOCKET: socket },
    uid: uid + 1,
    configuredSocket: null,
  });
  assert.equal(wrongUser.mode, "none");
  assert.match(wrongUser.mode === "none" ? wrongUser.reason : "", /serves uid \d+, not \d+/);
  if (uid === 0)
    assert.deepEqual(await probePrivileged({ env: {}, uid, configuredSocket: null }), {
      mode: "root",
    });
  const bogus = await probePrivileged({
    env: { BANGER_PRIVILEGED: "maybe" },
    uid,
    configuredSocket: null,
  });
  assert.match(bogus.mode === "none" ? bogus.reason : "", /not one of: root, helper/);
});

// Issue #10 item 13: --socket must never make root delete, chmod or chown someone else's file.
test("a regular file, a symlink or a directory at --socket is kept, and the helper refuses to start", async () => {
  const victim = path.join(dir, "victim");
  await fs.writeFile(victim, "precious\n", { mode: 0o640 });
  const before = await fs.stat(victim);
  const regular = path.join(dir, "regular.sock");
  await fs.writeFile(regular, "not a socket\n");
  const link = path.join(dir, "link.sock");
  await fs.symlink(victim, link);
  const sub = path.join(dir, "dir.sock");
  await fs.mkdir(sub);
  for (const [file, kind] of [
    [regular, "a regular file"],
    [link, "a symlink"],
    [sub, "a directory"],
  ] as const) {
    await assert.rejects(
      HelperServer.start({
        socketPath: file,
        ops: fakeOps(),
        uid: 4321,
        gid: 4321,
        pin: makePin("banger-z", "172.31.79.0/24"),
        log: quiet,
      }),
      (err: unknown) =>
        err instanceof BangerError &&
        err.message.includes(`is ${kind}, not a helper socket`) &&
        /pick another --socket/.test(err.hint ?? ""),
      kind,
    );
  }
  assert.equal(await fs.readFile(regular, "utf8"), "not a socket\n");
  assert.equal(await fs.readlink(link), victim);
  assert.ok((await fs.stat(sub)).isDirectory());
  const after = await fs.stat(victim);
  assert.deepEqual(
    [after.mode, after.uid, after.gid, await fs.readFile(victim, "utf8")],
    [before.mode, before.uid, before.gid, "precious\n"],
    "the symlink's target was not touched",
  );
});

test("a second helper on the same bridge or an overlapping subnet in the same directory is refused", async () => {
  for (const clash of [
    makePin("banger-x", "172.31.90.0/24"),
    makePin("banger-w", "172.31.76.0/23"),
  ]) {
    await assert.rejects(
      HelperServer.start({
        socketPath: path.join(dir, "sibling.sock"),
        ops: fakeOps(),
        uid,
        gid,
        pin: clash,
        log: quiet,
      }),
      /already serves bridge banger-x with subnet 172\.31\.77\.0\/24/,
    );
  }
  await assert.rejects(fs.lstat(path.join(dir, "sibling.sock")), /ENOENT/);
});

// The real binary, as root: it must refuse a pin it cannot honour before it listens or touches
// anything. A bridge of this test's own stands in for a network the host already has.
test(
  "bin/banger-helper refuses a public subnet, a non-network address and a subnet the host already uses",
  { skip: uid === 0 ? false : "starting banger-helper needs root", timeout: 300_000 },
  async () => {
    const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
    await ensureBuilt(root);
    const bin = path.join(root, "bin", "banger-helper");
    const sock = path.join(dir, "real", "h.sock");
    const start = (...flags: string[]) =>
      run(process.execPath, [bin, "--user", "0", "--socket", sock, ...flags], {
        timeout: 30_000,
      }).then(
        () => "started",
        (err: { stderr?: string }) => err.stderr ?? String(err),
      );
    assert.match(
      await start("--bridge", "banger-t6", "--subnet", "8.0.0.0/16"),
      /subnet 8\.0\.0\.0\/16 is not a private \(RFC 1918\) range[\s\S]*hint: use a subnet inside 10\.0\.0\.0\/8/,
    );
    assert.match(
      await start("--bridge", "banger-t6", "--subnet", "0.0.0.0/0"),
      /prefix \/0 must be between \/16 and \/29/,
    );
    assert.match(
      await start("--bridge", "eth0", "--subnet", "172.31.56.0/24"),
      /bridge "eth0" is not a banger bridge name/,
    );
    await run("ip", ["link", "add", "banger-t6d", "type", "bridge"]);
    try {
      await run("ip", ["addr", "add", "172.31.56.1/24", "dev", "banger-t6d"]);
      assert.match(
        await start("--bridge", "banger-t6", "--subnet", "172.31.56.0/25"),
        /subnet 172\.31\.56\.0\/25 overlaps a network this host already uses \(.*address 172\.31\.56\.1\/24 on banger-t6d/,
      );
    } finally {
      await run("ip", ["link", "del", "banger-t6d"]);
    }
    await assert.rejects(fs.lstat(sock), /ENOENT/, "it never listened");
    await assert.rejects(run("ip", ["link", "show", "dev", "banger-t6"]), "no bridge was made");
  },
);

test("the daemon follows the helper's pin when its config keeps the defaults, and refuses a helper that disagrees", async () => {
  const env = { BANGER_PRIVILEGED: "helper", BANGER_HELPER_SOCKET: socket };
  const defaults = { bridge: "banger0", subnet: "172.30.0.0/24", dnsPort: 53 };
  const follows = await probePrivileged({ env, uid, configuredSocket: null, network: defaults });
  assert.equal(follows.mode, "helper");
  assert.deepEqual(pinnedNetwork(follows, defaults), {
    bridge: "banger-x",
    subnet: "172.31.77.0/24",
    dnsPort: 53,
  });
  const same = { bridge: "banger-x", subnet: "172.31.77.9/24" };
  assert.equal(
    (await probePrivileged({ env, uid, configuredSocket: null, network: same })).mode,
    "helper",
  );
  const other = { bridge: "banger-q", subnet: "172.31.99.0/24" };
  const refused = await probePrivileged({ env, uid, configuredSocket: null, network: other });
  assert.equal(refused.mode, "none");
  assert.match(
    refused.mode === "none" ? refused.reason : "",
    /serves bridge banger-x with subnet 172\.31\.77\.0\/24, but \[network\] in the config says bridge banger-q, subnet 172\.31\.99\.0\/24/,
  );
});

test("a root daemon pins its in-process ops to its config, checked like the helper's flags", async () => {
  const calls: string[] = [];
  const runner = {
    which: async () => null,
    run: async (cmd: string, args: string[]) => {
      calls.push([cmd, ...args].join(" "));
      const json = args.includes("route") ? '[{"dst":"10.8.0.0/16","dev":"tun0"}]' : "[]";
      return { code: 0, signal: null, stdout: json, stderr: "" };
    },
  };
  const root = { mode: "root" } as const;
  await assert.rejects(
    privilegedOpsFor(root, runner, { bridge: "banger0", subnet: "8.8.8.0/24" }, 0),
    /not a private \(RFC 1918\) range/,
  );
  await assert.rejects(
    privilegedOpsFor(root, runner, { bridge: "banger0", subnet: "10.8.1.0/24" }, 0),
    /overlaps a network this host already uses \(route 10\.8\.0\.0\/16 via tun0\)/,
  );
  const ops = await privilegedOpsFor(
    root,
    runner,
    { bridge: "banger0", subnet: "172.30.0.0/24" },
    0,
  );
  assert.ok(ops);
  await assert.rejects(ops.ensureNat("0.0.0.0/0", "banger0"), /serves only bridge banger0/);
  await assert.rejects(ops.removeNat("banger-other"), /serves only bridge banger0/);
  assert.ok(
    calls.every((c) => / show$/.test(c)),
    calls.join("\n"),
  );
});

test("a root daemon whose [network] cannot be pinned is told so by the probe (and doctor)", async () => {
  const probe = await probePrivileged({
    env: {},
    uid: 0,
    configuredSocket: null,
    network: { bridge: "banger0", subnet: "8.8.8.0/24" },
  });
  assert.equal(probe.mode, "none");
  assert.match(
    probe.mode === "none" ? probe.reason : "",
    /\[network\] cannot be served: subnet 8\.8\.8\.0\/24 is not a private \(RFC 1918\) range/,
  );
  assert.deepEqual(
    await probePrivileged({
      env: {},
      uid: 0,
      configuredSocket: null,
      network: { bridge: "banger0", subnet: "172.30.0.9/24" },
    }),
    { mode: "root" },
  );
});

// The pinned root ops against the real `ip`, on a bridge of this test's own (removed after).
test(
  "real ip: the pinned bridge is made once, its taps come and go, a squatting tap or non-bridge is refused",
  { skip: uid === 0 ? false : "needs root" },
  async () => {
    const real = createCommandRunner();
    const pin = makePin("banger-t6b", "172.31.57.0/24");
    const ops = createRootOps(real, { pin, onlyForUid: 0 });
    try {
      await ops.ensureBridge("banger-t6b", "172.31.57.1/24");
      await ops.ensureBridge("banger-t6b", "172.31.57.1/24");
      const addrs = (await run("ip", ["-o", "-4", "addr", "show", "dev", "banger-t6b"])).stdout;
      assert.equal(addrs.match(/inet 172\.31\.57\.1\/24/g)?.length, 1, addrs);
      await ops.createTap("bg-t6test00001", "banger-t6b", 0);
      assert.deepEqual(await ops.listTaps("banger-t6b"), [{ name: "bg-t6test00001", ownerUid: 0 }]);
      await ops.deleteTap("bg-t6test00001");
      await assert.rejects(ops.createTap("banger-t6c", "banger-t6b", 0), /taps are named bg-/);
      await assert.rejects(ops.ensureBridge("banger-t6b", "8.8.8.8/1"), /serves only bridge/);
      assert.doesNotMatch((await run("ip", ["-4", "route", "show"])).stdout, /^0\.0\.0\.0\/1 /m);
    } finally {
      await run("ip", ["link", "del", "bg-t6test00001"]).catch(() => {});
      await run("ip", ["link", "del", "banger-t6b"]).catch(() => {});
    }
    await run("ip", ["tuntap", "add", "dev", "banger-t6b", "mode", "tap"]);
    try {
      await assert.rejects(
        ops.ensureBridge("banger-t6b", "172.31.57.1/24"),
        /it exists and is not a bridge \(tun\)/,
      );
      assert.doesNotMatch(
        (await run("ip", ["-o", "-4", "addr", "show", "dev", "banger-t6b"])).stdout,
        /172\.31\.57\.1/,
      );
    } finally {
      await run("ip", ["link", "del", "banger-t6b"]).catch(() => {});
    }
  },
);

test("the helper's newer operations: removeBridge, and listDetachedTaps only for its own user", async () => {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), "banger-helper-test-"));
  const sock = path.join(d, "helper.sock");
  const base = fakeOps();
  const own: FakeOps = {
    ...base,
    async removeBridge(name) {
      base.calls.push(`removeBridge ${name}`);
    },
    async listDetachedTaps() {
      base.calls.push("listDetachedTaps");
      return [
        { name: "bg-mine0000001", ownerUid: uid, open: false },
        { name: "bg-theirs00001", ownerUid: uid + 4242, open: false },
      ];
    },
  };
  const s = await HelperServer.start({ socketPath: sock, ops: own, uid, gid, pin, log: quiet });
  try {
    const c = new HelperClient(sock, { timeoutMs: 10_000 });
    assert.deepEqual(await c.listDetachedTaps(), [
      { name: "bg-mine0000001", ownerUid: uid, open: false },
    ]);
    await c.removeBridge("banger-x");
    await assert.rejects(c.removeBridge("docker0"), /not one of banger's devices/);
    assert.deepEqual(base.calls, ["listDetachedTaps", "removeBridge banger-x"]);
  } finally {
    await s.close();
    await fs.rm(d, { recursive: true, force: true });
  }
});
