import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { execFile } from "node:child_process";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// Warm start under TCG: the first `vm create` of a shape boots cold and saves the shape's boot
// snapshot; later ones restore it, each clone told its own name, clock and entropy, with
// [[file_sync]] copied in as it is now. `--cold` skips it; a damaged snapshot falls back to a
// cold boot with a warning. Which path a create took is the daemon's answer (`restored`), never
// a timing.
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
const { cli, ok } = bangerCli(() => home.env);
let token: string;

interface Created {
  name: string;
  state: string;
  restored?: boolean;
  snapshot?: string | null;
}

async function create(name: string, ...flags: string[]): Promise<Created & { stderr: string }> {
  const r = await ok("vm", "create", "--name", name, "--json", ...flags);
  return { ...(JSON.parse(r.stdout) as Created), stderr: r.stderr };
}

async function ssh(name: string, command: string): Promise<string> {
  return (await ok("vm", "ssh", name, "--", "sh", "-c", command)).stdout;
}

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-warm-");
  token = path.join(home.home, "token");
  await fs.writeFile(token, "one\n");
  await fs.mkdir(path.dirname(home.layout.configFile), { recursive: true });
  await fs.writeFile(
    home.layout.configFile,
    `[[file_sync]]\nhost = ${JSON.stringify(token)}\nguest = "~/.warm-token"\nmode = "0640"\n`,
  );
  await useSharedDefaultImage(home);
});

after(async () => {
  await cleanupE2eHome(home);
});

test(
  "the first create boots cold and saves a boot snapshot; later ones restore it, each its own VM",
  { timeout: 600_000 },
  async () => {
    const first = await create("warm-a");
    assert.equal(first.state, "running");
    assert.equal(first.restored, false, "nothing to restore yet: a cold boot");
    const snaps = JSON.parse((await ok("snapshot", "list", "--json")).stdout) as Array<{
      name: string;
      kind: string;
      sourceVm: string;
    }>;
    assert.equal(snaps.length, 1, JSON.stringify(snaps));
    assert.equal(snaps[0]!.kind, "boot");
    assert.equal(snaps[0]!.sourceVm, "warm-a");
    // The VM the snapshot was saved from runs on, its clock set again after the pause.
    assert.equal((await ssh("warm-a", "hostname")).trim(), "warm-a");

    await fs.writeFile(token, "two\n");
    const b = await create("warm-b");
    const c = await create("warm-c");
    for (const clone of [b, c]) {
      assert.equal(clone.restored, true, `${clone.name} restored: ${clone.stderr}`);
      assert.equal(clone.snapshot, snaps[0]!.name);
    }
    const look = async (name: string) => {
      const out = await ssh(
        name,
        "hostname; date +%s; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' '; " +
          "cat /etc/machine-id; cat /etc/ssh/ssh_host_ed25519_key.pub; " +
          "stat -c '%U %a' /root/.warm-token; cat /root/.warm-token",
      );
      const [hostname, epoch, random, machineId, hostKey, owner, content] = out.trim().split("\n");
      return { hostname, epoch: Number(epoch), random, machineId, hostKey, owner, content };
    };
    const [a, bb, cc] = [await look("warm-a"), await look("warm-b"), await look("warm-c")];
    for (const [vm, seen] of [
      ["warm-b", bb],
      ["warm-c", cc],
    ] as const) {
      assert.equal(seen.hostname, vm, "the clone took its own name");
      assert.ok(
        Math.abs(seen.epoch - Date.now() / 1000) < 5,
        `${vm}'s clock is the host's, not the snapshot's (${seen.epoch})`,
      );
      assert.equal(seen.content, "two", "file_sync as it is now, not as the snapshot had it");
      assert.equal(seen.owner, "root 640");
    }
    assert.equal(a.content, "one", "the first VM keeps what its own create synced");
    assert.notEqual(bb.random, cc.random, "clones of one snapshot draw different random bytes");
    assert.notEqual(bb.machineId, cc.machineId, "each clone has its own machine-id");
    assert.notEqual(bb.machineId, a.machineId);
    assert.notEqual(bb.hostKey, cc.hostKey, "each clone has its own SSH host key");
    assert.notEqual(bb.hostKey, a.hostKey);

    // A snapshot of a clone keeps what the snapshot under it held: the first VM's first boot (its
    // marker, written to warm-a's root before the boot snapshot) is in the fork's saved root,
    // read here offline from the disk file (the guest's page cache would hide a lost layer).
    await ok("vm", "fork", "warm-b", "--name", "warm-d");
    const forkSnap = (
      JSON.parse((await ok("snapshot", "list", "--json")).stdout) as Array<{
        id: string;
        name: string;
        sourceVm: string;
      }>
    ).find((s) => s.sourceVm === "warm-b")!;
    const raw = path.join(home.home, "fork-root.raw");
    await run("qemu-img", [
      "convert",
      "-O",
      "raw",
      path.join(home.layout.snapshotsDir, forkSnap.id, "root.disk"),
      raw,
    ]);
    const marker = await run("debugfs", ["-R", "stat /var/lib/banger/first-boot-done", raw]);
    assert.doesNotMatch(marker.stdout + marker.stderr, /File not found/);
    assert.match(marker.stdout, /Inode:/);
    await fs.rm(raw);
    assert.equal((await ssh("warm-d", "hostname")).trim(), "warm-d");
    await ok("vm", "delete", "warm-d");
    await ok("snapshot", "delete", forkSnap.name);

    // A snapshot clones sit on is not deleted under them.
    const refused = await cli("snapshot", "delete", snaps[0]!.name);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /warm-b/);
  },
);

test(
  "--cold boots from the image even with a boot snapshot there",
  { timeout: 300_000 },
  async () => {
    const cold = await create("warm-cold", "--cold");
    assert.equal(cold.restored, false);
    assert.equal(cold.snapshot ?? null, null, "a cold VM sits on no snapshot");
    assert.equal((await ssh("warm-cold", "hostname")).trim(), "warm-cold");
    await ok("vm", "delete", "warm-cold");
  },
);

test(
  "a damaged boot snapshot: the create boots cold instead, with a one-line warning",
  { timeout: 300_000 },
  async () => {
    const [snap] = JSON.parse((await ok("snapshot", "list", "--json")).stdout) as Array<{
      id: string;
    }>;
    const memory = path.join(home.layout.snapshotsDir, snap!.id, "memory");
    await fs.truncate(memory, 4096);
    const vm = await create("warm-broken");
    assert.equal(vm.state, "running");
    assert.equal(vm.restored, false);
    assert.match(vm.stderr, /^warning: could not restore VM warm-broken .*booted it cold/m);
    assert.equal((await ssh("warm-broken", "hostname")).trim(), "warm-broken");
    // Booted from the snapshot's disks, it made its own host key (the snapshot's is warm-a's).
    const key = "cat /etc/ssh/ssh_host_ed25519_key.pub";
    assert.notEqual(await ssh("warm-broken", key), await ssh("warm-a", key));
  },
);

test(
  "snapshot prune drops boot snapshots only once no VM sits on them",
  { timeout: 120_000 },
  async () => {
    const kept = await ok("snapshot", "prune");
    assert.match(kept.stdout, /no boot snapshot to remove/, "its clones still sit on it");
    await ok("vm", "delete", "warm-b", "warm-c", "warm-broken");
    const dry = await ok("snapshot", "prune", "--dry-run");
    assert.match(dry.stdout, /^would free .*boot-/);
    assert.equal(
      (JSON.parse((await ok("snapshot", "list", "--json")).stdout) as unknown[]).length,
      1,
    );
    const pruned = await ok("snapshot", "prune");
    assert.match(pruned.stdout, /^freed .*boot-/);
    assert.deepEqual(JSON.parse((await ok("snapshot", "list", "--json")).stdout), []);
    assert.deepEqual(await fs.readdir(home.layout.snapshotsDir), []);
  },
);
