import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { tryConnect, type DaemonClient } from "../src/cli/client.js";
import { buildHandlers } from "../src/daemon/handlers.js";
import { Daemon, type DaemonDeps, type StartupStep } from "../src/daemon/server.js";
import { Store } from "../src/store/store.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

const quietLog = { info() {}, error() {} };
const homes: TempLayout[] = [];
after(async () => {
  for (const h of homes) await h.cleanup();
});

async function freshHome(): Promise<TempLayout> {
  const home = await tempLayout();
  homes.push(home);
  return home;
}

function deps(home: TempLayout, extra: Partial<DaemonDeps> = {}): DaemonDeps {
  return {
    layout: home.layout,
    version: "test",
    log: quietLog,
    handlers: buildHandlers,
    env: home.env,
    ...extra,
  };
}

async function connect(home: TempLayout): Promise<DaemonClient> {
  const client = await tryConnect(home.layout);
  assert.ok(client, "daemon socket should answer");
  return client;
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

test("daemon answers ping and status over a 0600 socket", async () => {
  const home = await freshHome();
  const daemon = await Daemon.open(deps(home));
  try {
    const mode = (await fs.stat(home.layout.socketFile)).mode & 0o777;
    assert.equal(mode, 0o600);
    const client = await connect(home);
    const pong = await client.call("daemon.ping", {});
    assert.deepEqual(pong, { pong: true, version: "test", pid: process.pid });
    const status = await client.call("daemon.status", {});
    assert.equal(status.socket, home.layout.socketFile);
    assert.ok(status.schemaVersion >= 1);
    assert.deepEqual(await client.call("vm.list", {}), []);
    client.close();
  } finally {
    await daemon.close();
  }
});

test("errors reach the client with code, message and hint", async () => {
  const home = await freshHome();
  const daemon = await Daemon.open(deps(home));
  const client = await connect(home);
  try {
    await assert.rejects(client.call("vm.show", { name: "nope" }), (err: unknown) => {
      assert.ok(err instanceof BangerError);
      assert.equal(err.code, ErrorCode.NotFound);
      assert.match(err.message, /no VM named "nope"/);
      assert.match(err.hint ?? "", /banger vm list/);
      return true;
    });
    await assert.rejects(client.call("vm.show", { name: "" }), (err: unknown) => {
      assert.ok(err instanceof BangerError);
      assert.equal(err.code, ErrorCode.InvalidParams);
      assert.match(err.message, /name/);
      return true;
    });
    await assert.rejects(client.call("vm.create", { name: "Bad_Name" }), (err: unknown) => {
      assert.ok(err instanceof BangerError);
      assert.equal(err.code, ErrorCode.InvalidParams);
      assert.match(err.message, /invalid VM name "Bad_Name"/);
      assert.match(err.hint ?? "", /DNS label/);
      return true;
    });
  } finally {
    client.close();
    await daemon.close();
  }
});

test("long operations stream progress notifications to the caller", async () => {
  const home = await freshHome();
  // Two builds at once on one connection: each caller must get its own progress, in
  // order, all before its result, and its own result.
  const gate = { waiting: 0, release: () => {} };
  const bothStarted = new Promise<void>((resolve) => (gate.release = resolve));
  const daemon = await Daemon.open(
    deps(home, {
      handlers: (d) => ({
        ...buildHandlers(d),
        "image.build": async (params, ctx) => {
          const name = params.name ?? "?";
          if (++gate.waiting === 2) gate.release();
          await bothStarted;
          for (let i = 1; i <= 3; i++) {
            ctx.progress({ stage: `bootstrap-${name}`, current: i, total: 3 });
            await new Promise((r) => setImmediate(r));
          }
          ctx.progress({ stage: `finalise-${name}`, message: "ext4" });
          return {
            id: `id-${name}`,
            name,
            kernel: null,
            rootfsPath: `/x/${name}`,
            source: null,
            digest: null,
            sizeBytes: null,
            managed: true,
            createdAt: "now",
            init: null,
            config: null,
          };
        },
      }),
    }),
  );
  const client = await connect(home);
  try {
    const build = async (name: string) => {
      const seen: string[] = [];
      const result = await client.call(
        "image.build",
        { name },
        { onProgress: (r) => seen.push(`${r.stage}:${r.current ?? r.message}`) },
      );
      seen.push(`result:${result.name}:${result.rootfsPath}`);
      return seen;
    };
    const [a, b] = await Promise.all([build("a"), build("b")]);
    for (const [name, seen] of [
      ["a", a],
      ["b", b],
    ] as const)
      assert.deepEqual(seen, [
        `bootstrap-${name}:1`,
        `bootstrap-${name}:2`,
        `bootstrap-${name}:3`,
        `finalise-${name}:ext4`,
        `result:${name}:/x/${name}`,
      ]);
  } finally {
    client.close();
    await daemon.close();
  }
});

test("a second daemon on the same home is refused while the first runs", async () => {
  const home = await freshHome();
  const first = await Daemon.open(deps(home));
  try {
    await assert.rejects(Daemon.open(deps(home)), /another bangerd is already running/);
    // The refused start must not have removed the live daemon's socket.
    const client = await connect(home);
    await client.call("daemon.ping", {});
    client.close();
  } finally {
    await first.close();
  }
});

test("a second daemon on the same state with another runtime dir (XDG_RUNTIME_DIR differs) is refused", async () => {
  const home = await freshHome();
  const first = await Daemon.open(deps(home));
  const otherRun = path.join(home.home, "other-run");
  const other = {
    ...home.layout,
    runtimeDir: otherRun,
    socketFile: path.join(otherRun, "bangerd.sock"),
    pidFile: path.join(otherRun, "bangerd.pid"),
    lockFile: path.join(otherRun, "bangerd.lock"),
  };
  try {
    await assert.rejects(
      Daemon.open({ ...deps(home), layout: other }),
      (err: unknown) =>
        err instanceof BangerError &&
        err.code === ErrorCode.Busy &&
        new RegExp(`another bangerd \\(pid ${process.pid}\\) already uses .*XDG_RUNTIME_DIR`).test(
          err.message,
        ),
    );
    // Refused before it listened: nothing of it is left, the first still answers.
    assert.equal(await exists(other.socketFile), false);
    assert.equal(await exists(other.lockFile), false, "its runtime lock is released");
    const client = await connect(home);
    await client.call("daemon.ping", {});
    client.close();
  } finally {
    await first.close();
  }
  assert.equal(await exists(home.layout.stateLockFile), false, "the state lock is released");
  // With the first gone, the other runtime dir may serve this state.
  const second = await Daemon.open({ ...deps(home), layout: other });
  await second.close();
});

test("a stale lock and socket from a crashed daemon are replaced", async () => {
  const home = await freshHome();
  await fs.mkdir(home.layout.runtimeDir, { recursive: true });
  // A pid that surely exited: a child we already reaped.
  const child = spawn("true");
  const deadPid = await new Promise<number>((resolve) =>
    child.on("exit", () => resolve(child.pid!)),
  );
  await fs.writeFile(home.layout.lockFile, `${deadPid}\n`);
  await fs.writeFile(home.layout.socketFile, "not a socket");
  const daemon = await Daemon.open(deps(home));
  try {
    const client = await connect(home);
    assert.equal((await client.call("daemon.ping", {})).pid, process.pid);
    client.close();
    assert.equal((await fs.readFile(home.layout.lockFile, "utf8")).trim(), String(process.pid));
  } finally {
    await daemon.close();
  }
});

const steps: StartupStep[] = ["dirs", "lock", "store", "listen", "pidfile"];
for (const failAt of steps) {
  test(`start-up failing after "${failAt}" undoes every earlier step`, async () => {
    const home = await freshHome();
    const stores: Store[] = [];
    let storeClosed = 0;
    const openStore = (file: string) => {
      const store = Store.open(file);
      const close = store.close.bind(store);
      store.close = () => {
        storeClosed++;
        close();
      };
      stores.push(store);
      return store;
    };
    await assert.rejects(
      Daemon.open(
        deps(home, {
          openStore,
          afterStep: (step) => {
            if (step === failAt) throw new Error(`injected failure after ${step}`);
          },
        }),
      ),
      /injected failure/,
    );
    assert.equal(await exists(home.layout.lockFile), false, "lock released");
    assert.equal(await exists(home.layout.stateLockFile), false, "state lock released");
    assert.equal(await exists(home.layout.socketFile), false, "socket removed");
    assert.equal(await exists(home.layout.pidFile), false, "pid file removed");
    assert.equal(storeClosed, stores.length, "store closed if it was opened");
    // And nothing left behind blocks the next start.
    const daemon = await Daemon.open(deps(home));
    await daemon.close();
  });
}

test("close is idempotent and safe when called concurrently", async () => {
  const home = await freshHome();
  let closes = 0;
  const daemon = await Daemon.open(
    deps(home, {
      openStore: (file) => {
        const store = Store.open(file);
        const close = store.close.bind(store);
        store.close = () => {
          closes++;
          close();
        };
        return store;
      },
    }),
  );
  const client = await connect(home);
  await client.call("daemon.ping", {});
  await Promise.all([daemon.close(), daemon.close(), daemon.close()]);
  await daemon.close();
  assert.equal(closes, 1);
  assert.equal(await exists(home.layout.socketFile), false);
  assert.equal(await exists(home.layout.lockFile), false);
  assert.equal(await tryConnect(home.layout), null);
  client.close();
});

test("a client that connects while the daemon is still starting is answered", async () => {
  // A CLI that started the daemon polls for its socket and connects at once, which can be
  // before start-up finishes. That connection used to be accepted and never served: the hang
  // seen in CI. Connect between "listen" and the end of start-up, then ask.
  const home = await freshHome();
  let early: Promise<DaemonClient> | null = null;
  const daemon = await Daemon.open(
    deps(home, {
      afterStep: async (step) => {
        if (step !== "listen") return;
        early = connect(home);
        await early; // the kernel accepted it; the daemon has not attached handlers yet
      },
    }),
  );
  try {
    assert.ok(early, "the early connection was made");
    const client = await (early as Promise<DaemonClient>);
    const pong = await Promise.race([
      client.call("daemon.ping", {}),
      new Promise((_, reject) => setTimeout(() => reject(new Error("no answer in 10 s")), 10_000)),
    ]);
    assert.deepEqual(pong, { pong: true, version: "test", pid: process.pid });
    client.close();
  } finally {
    await daemon.close();
  }
});

test("a start-up that fails after a client connected early still undoes everything", async () => {
  const home = await freshHome();
  let early: DaemonClient | null = null;
  const opened = Daemon.open(
    deps(home, {
      afterStep: async (step) => {
        if (step === "listen") early = await connect(home);
        if (step === "pidfile") throw new Error("injected failure after pidfile");
      },
    }),
  );
  const outcome = await Promise.race([
    opened.then(
      () => "opened",
      (err: Error) => err.message,
    ),
    new Promise<string>((resolve) => setTimeout(() => resolve("still pending after 10 s"), 10_000)),
  ]);
  (early as DaemonClient | null)?.close();
  assert.equal(outcome, "injected failure after pidfile");
  assert.equal(await exists(home.layout.socketFile), false, "socket removed");
  assert.equal(await exists(home.layout.lockFile), false, "lock released");
});
