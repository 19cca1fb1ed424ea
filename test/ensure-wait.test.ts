// Two first-time `vm create`s at once both need the default image and kernel, which neither has
// yet: the second must wait for the first one's build (not fail Busy), and build itself only if
// that one fails. A real ImageService and KernelService, with the real finalisation (flatten,
// guest assets, mkfs.ext4, debugfs); only their slow sources are held back: mmdebstrap (minutes
// and Debian's mirrors) answers with a small root tarball when the test lets it, and the kernel
// derivation (apt) is the service's own `deriveDistroKernel` seam.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, test } from "node:test";
import net from "node:net";
import { startDaemon, tryConnect } from "../src/cli/client.js";
import { ensureBuilt } from "./helpers/build.js";
import { cleanupE2eHome } from "./helpers/e2e-cleanup.js";
import { ErrorCode } from "../src/api/errors.js";
import { KernelService } from "../src/kernel/service.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner, type CommandRunner } from "../src/system/runner.js";
import { makeLayer } from "./helpers/layer.js";
import { imageServices, noOci } from "./helpers/services.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

const real = createCommandRunner();
const homes: Array<{ home: TempLayout; store: Store }> = [];
after(async () => {
  for (const { home, store } of homes) {
    store.close();
    await home.cleanup();
  }
});

async function fresh(): Promise<{ home: TempLayout; store: Store }> {
  const home = await tempLayout("banger-ensure-");
  const h = { home, store: Store.open(home.layout.dbFile) };
  homes.push(h);
  return h;
}

/** A gate the test opens (or fails) by hand. */
function gate(): { wait: Promise<boolean>; open(): void; fail(): void } {
  let settle!: (ok: boolean) => void;
  const wait = new Promise<boolean>((r) => (settle = r));
  return { wait, open: () => settle(true), fail: () => settle(false) };
}

/**
 * The real runner, except that each mmdebstrap call waits for the next gate and then writes a
 * small root tarball where mmdebstrap would (or exits 1 when the gate fails).
 */
function heldMmdebstrap(): {
  runner: CommandRunner;
  calls: number;
  gates: ReturnType<typeof gate>[];
} {
  const held = {
    calls: 0,
    gates: [gate(), gate(), gate()],
    runner: {
      which: (cmd: string) => real.which(cmd),
      async run(cmd: string, args: string[], opts?: Parameters<CommandRunner["run"]>[2]) {
        if (cmd !== "mmdebstrap") return real.run(cmd, args, opts);
        const g = held.gates[held.calls++]!;
        if (!(await g.wait))
          return { code: 1, signal: null, stdout: "", stderr: "E: the mirror went away" };
        const tarball = args.find((a) => a.endsWith("rootfs.tar"))!;
        await fs.writeFile(
          tarball,
          await makeLayer(
            [
              { name: "etc/", type: "directory" },
              { name: "etc/os-release", body: 'ID=debian\nVERSION_CODENAME="bookworm"\n' },
              { name: "usr/", type: "directory" },
              { name: "usr/bin/", type: "directory" },
              { name: "usr/bin/true", body: "#!/bin/sh\n", mode: 0o755 },
            ],
            { gzip: false },
          ),
        );
        return { code: 0, signal: null, stdout: "", stderr: "I: done\n" };
      },
    } satisfies CommandRunner,
  };
  return held;
}

/** Resolves once `pred` holds, checking each tick (bounded by the test's timeout). */
async function until(pred: () => boolean): Promise<void> {
  while (!pred()) await new Promise((r) => setTimeout(r, 10));
}

test(
  "two first-time ensures of the default image: the second waits for the first build, one build in all",
  { timeout: 120_000 },
  async () => {
    const { home, store } = await fresh();
    const held = heldMmdebstrap();
    const { images } = imageServices(store, home.layout, { runner: held.runner, oci: noOci });
    const stages: string[] = [];
    const first = images.ensure("debian-bookworm");
    await until(() => held.calls === 1);
    const second = images.ensure("debian-bookworm", (p) => stages.push(p.message ?? p.stage));
    // The second is waiting, not refused: it has not settled while the build is held.
    const early = await Promise.race([
      second.then(
        () => "resolved",
        (err: Error) => `rejected: ${err.message}`,
      ),
      new Promise((r) => setImmediate(() => r("pending"))),
    ]);
    assert.equal(early, "pending");
    held.gates[0]!.open();
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.id, b.id, "both got the one image");
    assert.equal(held.calls, 1, "mmdebstrap ran once");
    assert.ok(
      stages.some((s) => /waiting for the build/.test(s)),
      `told why: ${stages.join("; ")}`,
    );
    assert.equal(store.listImages().length, 1);
    assert.deepEqual(
      (await fs.readdir(home.layout.imagesDir)).filter((n) => n.includes("staging")),
      [],
    );
  },
);

test(
  "the waiter builds itself when the first build fails, and a waiter that gives up is cancelled alone",
  { timeout: 120_000 },
  async () => {
    const { home, store } = await fresh();
    const held = heldMmdebstrap();
    const { images } = imageServices(store, home.layout, { runner: held.runner, oci: noOci });
    const first = images.ensure("debian-bookworm").then(
      () => null,
      (err: { code?: number; message: string }) => err,
    );
    await until(() => held.calls === 1);
    const quitter = new AbortController();
    const gaveUp = images
      .ensure("debian-bookworm", () => {}, quitter.signal)
      .then(
        () => null,
        (err: { code?: number }) => err,
      );
    const second = images.ensure("debian-bookworm");
    quitter.abort();
    assert.equal((await gaveUp)?.code, ErrorCode.Cancelled, "the waiter that gave up is cancelled");
    held.gates[0]!.fail();
    const failed = await first;
    assert.match(
      failed?.message ?? "",
      /mmdebstrap failed/,
      "the first caller sees its own failure",
    );
    await until(() => held.calls === 2);
    held.gates[1]!.open();
    const info = await second;
    assert.equal(info.name, "debian-bookworm");
    assert.equal(held.calls, 2, "the waiter built once itself");
  },
);

test(
  "two first-time ensures of the default kernel: the second waits for the one derivation",
  { timeout: 60_000 },
  async () => {
    const { home, store } = await fresh();
    const g = gate();
    let derivations = 0;
    const kernels = new KernelService({
      store,
      layout: home.layout,
      env: {},
      runner: real,
      async deriveDistroKernel(outDir) {
        derivations++;
        await g.wait;
        await fs.writeFile(path.join(outDir, "vmlinuz"), Buffer.alloc(4096, 1));
        await fs.writeFile(path.join(outDir, "initrd.img"), Buffer.alloc(512, 2));
        return { version: "6.1.0-test", package: "linux-image-cloud-amd64", modules: [] };
      },
    });
    const first = kernels.ensure("debian-cloud");
    await until(() => derivations === 1);
    const second = kernels.ensure("debian-cloud");
    const early = await Promise.race([
      second.then(
        () => "resolved",
        (err: Error) => `rejected: ${err.message}`,
      ),
      new Promise((r) => setImmediate(() => r("pending"))),
    ]);
    assert.equal(early, "pending");
    g.open();
    const [a, b] = await Promise.all([first, second]);
    assert.equal(a.dir, b.dir);
    assert.equal(derivations, 1, "derived once");
    assert.deepEqual(
      (await fs.readdir(home.layout.kernelsDir)).filter((n) => n.includes("staging")),
      [],
    );
  },
);

test(
  "a real bangerd: the second first-time vm create waits for the first one's image build; both cancelled leave nothing",
  { timeout: 120_000 },
  async () => {
    await ensureBuilt(path.resolve(import.meta.dirname, ".."));
    const home = await tempLayout("banger-ensure-d-");
    // The build is real (mmdebstrap in its staging dir) and stays in progress: its mirror hangs.
    const hung = new Set<net.Socket>();
    const mirror = net.createServer((sock) => {
      hung.add(sock);
      sock.on("error", () => {});
    });
    await new Promise<void>((r) => mirror.listen(0, "127.0.0.1", r));
    const tmp = path.join(home.home, "tmp");
    await fs.mkdir(tmp);
    const env = {
      ...home.env,
      TMPDIR: tmp,
      BANGER_DEBIAN_MIRROR: `http://127.0.0.1:${(mirror.address() as net.AddressInfo).port}/debian`,
    };
    try {
      await startDaemon({ layout: home.layout, env, notice: () => {} });
      const first = (await tryConnect(home.layout))!;
      const second = (await tryConnect(home.layout))!;
      const firstCall = first.call("vm.create", { name: "one" }).catch((err: Error) => err);
      for (let i = 0; hung.size === 0; i++) {
        assert.ok(i < 1200, "mmdebstrap never asked the mirror");
        await new Promise((r) => setTimeout(r, 50));
      }
      let told!: (message: string) => void;
      const waiting = new Promise<string>((r) => (told = r));
      const secondCall = second.call(
        "vm.create",
        { name: "two" },
        {
          onProgress: (p) =>
            /waiting for the build/.test(p.message ?? "") ? told(p.message!) : undefined,
        },
      );
      const outcome = await Promise.race([
        waiting,
        secondCall.then(
          () => "the second create finished",
          (err: Error) => `the second create failed: ${err.message}`,
        ),
      ]);
      assert.match(outcome, /waiting for the build of debian-bookworm already running/);
      // Both callers give up (Ctrl-C closes the connection): the waiter and the build end.
      second.close();
      first.close();
      await firstCall;
      const check = (await tryConnect(home.layout))!;
      try {
        assert.deepEqual(await check.call("vm.list", {}), []);
        assert.deepEqual(await check.call("image.list", {}), []);
      } finally {
        check.close();
      }
      for (let i = 0; ; i++) {
        const left = (await fs.readdir(home.layout.imagesDir)).filter((n) => n.includes("staging"));
        if (left.length === 0) break;
        assert.ok(i < 400, `the cancelled build left ${left.join(", ")}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      for (const s of hung) s.destroy();
      mirror.close();
      await cleanupE2eHome(home);
    }
  },
);
