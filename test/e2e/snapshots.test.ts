import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// Snapshots, forks and clones on real VMs (QEMU microvm, TCG), through the real bin/banger.
// User-mode networking (the test default): every guest has the same address (10.0.2.15, QEMU's
// slirp) behind its own SSH port forward, so clones differ by hostname, not by address here; a
// bridge would need banger0, which tests must not touch. One original VM, booted once, serves
// every check.
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
const { cli, ok } = bangerCli(() => home.env);
const ORIGINAL = "snap-orig";
const MARK = `made-before-the-snapshot-${process.pid}`;

/** `banger vm ssh <vm> -- sh -c <script>`: its stdout, trimmed; the test fails unless it exits 0. */
async function inGuest(vm: string, script: string): Promise<string> {
  return (await ok("vm", "ssh", vm, "--", "sh", "-c", script)).stdout.trim();
}

/** Facts about a guest, read in one SSH call. */
async function facts(vm: string) {
  const [hostname, mark, sleeper, random, machineId] = (
    await inGuest(
      vm,
      [
        "hostname",
        "cat /root/mark",
        // No pgrep in every image: the command lines under /proc.
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' ' | grep -q 'sleep 100[0]' && echo running || echo gone",
        "head -c 16 /dev/urandom | od -An -x | tr -d ' \\n'; echo",
        "cat /etc/machine-id 2>/dev/null || echo -",
      ].join("; "),
    )
  ).split("\n");
  return {
    hostname,
    mark,
    sleeper,
    random,
    machineId,
  };
}

/**
 * How far the guest's clock is from the host's, in seconds, less the time the SSH call itself
 * took either side of the host's midpoint. Read right after the clock was set: under TCG a
 * guest's clock runs slow on a loaded host (seconds a minute here), with or without snapshots.
 */
async function clockSkew(vm: string): Promise<number> {
  const before = Date.now() / 1000;
  const guest = Number(await inGuest(vm, "date +%s.%N"));
  const after = Date.now() / 1000;
  return Math.max(0, Math.abs(guest - (before + after) / 2) - (after - before) / 2);
}

/** The host key a guest's sshd offers, as banger's known_hosts pinned it for `<vm>.vm`. */
async function pinnedKey(vm: string): Promise<string> {
  const known = await fs.readFile(path.join(home.layout.sshDir, "known_hosts"), "utf8");
  const line = known.split("\n").find((l) => l.startsWith(`${vm}.vm `));
  assert.ok(line, `a host key is pinned for ${vm}.vm`);
  return line.split(" ").slice(1).join(" ");
}

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-snap-");
  await useSharedDefaultImage(home);
});

after(async () => {
  await cleanupE2eHome(home);
});

test(
  "snapshot a running VM, fork it twice: both clones run at once with their own identity, the original runs on unchanged",
  { timeout: 1_200_000 },
  async () => {
    // --cold: this file is about user snapshots; a boot snapshot would only add a save.
    await ok("vm", "create", "--name", ORIGINAL, "--memory", "1G", "--disk-size", "1G", "--cold");
    await inGuest(
      ORIGINAL,
      `echo ${MARK} > /root/mark && sync && (setsid sleep 1000 </dev/null >/dev/null 2>&1 &)`,
    );
    const before = await facts(ORIGINAL);
    assert.equal(before.sleeper, "running");

    const clones = ["snap-c1", "snap-c2"];
    for (const clone of clones) {
      const fork = await ok("vm", "fork", ORIGINAL, "--name", clone);
      assert.equal(fork.stdout.trim(), clone);
      assert.match(fork.stderr, new RegExp(`VM ${clone} is a clone of ${ORIGINAL} \\(snapshot `));
      assert.doesNotMatch(fork.stderr, /warning:/, "restored, not booted cold");
      const skew = await clockSkew(clone);
      assert.ok(skew <= 2, `${clone}: its clock is the host's (${skew.toFixed(2)} s off)`);
      const own = await clockSkew(ORIGINAL);
      assert.ok(
        own <= 2,
        `${ORIGINAL}'s clock is set again after its pause (${own.toFixed(2)} s off)`,
      );
    }
    const list = JSON.parse((await ok("snapshot", "list", "--json")).stdout) as Array<{
      name: string;
      sourceVm: string;
      bytes: number;
      clones: string[];
    }>;
    assert.deepEqual(
      list.map((s) => [s.name, s.sourceVm, s.clones]),
      [
        [`${ORIGINAL}-snap-1`, ORIGINAL, ["snap-c1"]],
        [`${ORIGINAL}-snap-2`, ORIGINAL, ["snap-c2"]],
      ],
    );
    for (const s of list) assert.ok(s.bytes > 0, `${s.name} has a size`);

    // Both clones run at the same time.
    const shown = await Promise.all(
      clones.map(async (c) => JSON.parse((await ok("vm", "show", c, "--json")).stdout)),
    );
    for (const [i, vm] of shown.entries()) {
      assert.equal(vm.state, "running", clones[i]);
      assert.equal(vm.snapshot, `${ORIGINAL}-snap-${i + 1}`);
    }
    const got = [];
    for (const clone of clones) {
      const f = await facts(clone);
      got.push(f);
      assert.equal(f.hostname, clone, "its own hostname");
      assert.equal(f.mark, MARK, "the file written before the snapshot");
      // Restored, not booted: a cold boot would have no such process.
      assert.equal(f.sleeper, "running", "the process running at the snapshot");
      assert.notEqual(f.random, before.random);
      if (before.machineId !== "-" && before.machineId !== "")
        assert.notEqual(f.machineId, before.machineId, "a machine-id of its own");
    }
    assert.notEqual(got[0]!.random, got[1]!.random, "each clone's RNG was reseeded");
    assert.notEqual(await pinnedKey("snap-c1"), await pinnedKey(ORIGINAL), "its own host key");
    assert.notEqual(await pinnedKey("snap-c1"), await pinnedKey("snap-c2"));

    const after = await facts(ORIGINAL);
    assert.equal(after.hostname, ORIGINAL);
    assert.equal(after.mark, MARK);
    assert.equal(after.sleeper, "running");
    assert.equal(JSON.parse((await ok("vm", "show", ORIGINAL, "--json")).stdout).state, "running");

    const refused = await cli("snapshot", "delete", `${ORIGINAL}-snap-1`);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /has clones: snap-c1/);
    assert.match(refused.stderr, /banger vm delete snap-c1/);

    await ok("vm", "delete", ...clones);
    for (const s of list) await ok("snapshot", "delete", s.name);
    assert.deepEqual(await fs.readdir(home.layout.snapshotsDir), []);
  },
);

test(
  "a snapshot whose memory file is corrupted: the clone says so and boots cold",
  { timeout: 900_000 },
  async () => {
    const snap = (await ok("vm", "snapshot", ORIGINAL, "--name", "broken")).stdout.trim();
    assert.equal(snap, "broken");
    const { id } = JSON.parse((await ok("snapshot", "show", "broken", "--json")).stdout) as {
      id: string;
    };
    const memory = path.join(home.layout.snapshotsDir, id, "memory");
    const size = (await fs.stat(memory)).size;
    await fs.writeFile(memory, Buffer.alloc(Math.min(size, 1 << 20), 0x5a));
    const made = await ok(
      "vm",
      "create",
      "--from-snapshot",
      "broken",
      "--name",
      "snap-bad",
      "--json",
    );
    const answer = JSON.parse(made.stdout) as { restored: boolean; warnings: string[] };
    assert.equal(answer.restored, false);
    assert.match(
      made.stderr,
      /^warning: could not restore VM snap-bad from snapshot broken .*booted it cold/m,
    );
    assert.equal(await inGuest("snap-bad", "hostname"), "snap-bad");
    await ok("vm", "delete", "snap-bad");
    await ok("snapshot", "delete", "broken");
  },
);
