import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import { resolveLayout } from "../src/paths/layout.js";
import { createCommandRunner } from "../src/system/runner.js";
import { ensureBuilt } from "./helpers/build.js";
import { bangerCli } from "./helpers/cli.js";
import { ownSharedDefaults, FIRST_RUN_VM, type SharedDefaults } from "./helpers/shared-image.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

// The suite's one build from nothing: a fresh home's first `vm create`, run on a terminal as a
// new user would (test/helpers/shared-image.ts, shared by every test that boots the default
// image). This file checks what that first run did and left; debugfs reads the image back.
const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));
const runner = createCommandRunner();
let base: TempLayout;
let shared: SharedDefaults;
let release: () => Promise<void>;
const sharedEnv = () => ({ ...base.env, BANGER_HOME: shared.home });
const { cli, ok } = bangerCli(sharedEnv);

before(async () => {
  await ensureBuilt(root);
  base = await tempLayout("banger-ibuild-");
  ({ shared, release } = await ownSharedDefaults(base.env));
});

after(async () => {
  // This file started the shared home's daemon again; stop it (the image stays for others).
  if (shared) await cli("daemon", "stop").catch(() => undefined);
  await release?.();
  await base?.cleanup();
});

/** The stages the CLI marked done on its terminal, in order. */
function finishedStages(transcript: string): string[] {
  return [...transcript.matchAll(/✓ ([^\n]+)/g)].map((m) => m[1]!.trim());
}

test("a fresh home's first vm create derives the kernel and builds the default image, showing its progress", () => {
  const { firstRun } = shared;
  assert.equal(firstRun.code, 0, firstRun.transcript);
  assert.match(firstRun.transcript, new RegExp(`^${FIRST_RUN_VM}$`, "m"), "the VM's name");
  const stages = finishedStages(firstRun.transcript);
  for (const stage of [
    "image",
    "bootstrap",
    "flatten",
    "guest assets",
    "ext4",
    "kernel: download",
    "kernel: initramfs",
    "disks",
  ])
    assert.ok(stages.includes(stage), `stage ${stage} (got: ${stages.join(", ")})`);
  assert.ok(
    stages.indexOf("ext4") < stages.indexOf("kernel: download"),
    "the image is built, then the kernel derived",
  );
  assert.match(
    firstRun.transcript,
    /building the default image debian-bookworm \(first run only\)/,
  );
  assert.deepEqual(
    [firstRun.vm.state, firstRun.vm.image, firstRun.vm.kernel],
    ["created", "debian-bookworm", "debian-cloud"],
  );
});

test("the default image builds locally with mmdebstrap and boots-ready files are in place", async () => {
  const info = shared.image;
  assert.equal(info.name, "debian-bookworm");
  assert.equal(info.kernel, "debian-cloud");
  assert.equal(info.managed, true);
  assert.match(info.source ?? "", /^mmdebstrap:bookworm$/);
  const dir = path.dirname(info.rootfsPath);
  assert.deepEqual((await fs.readdir(dir)).sort(), ["manifest.json", "rootfs.ext4"]);
  const layout = resolveLayout({ BANGER_HOME: shared.home });
  assert.deepEqual(
    (await fs.readdir(layout.imagesDir)).filter((f) => f.includes("staging")),
    [],
    "no staging dir left",
  );
  assert.deepEqual(
    (await fs.readdir(layout.kernelsDir)).filter((f) => f.includes("staging")),
    [],
    "no kernel staging dir left",
  );

  const rootfs = info.rootfsPath;
  for (const file of [
    "/usr/sbin/sshd",
    "/usr/bin/git",
    "/usr/bin/curl",
    "/usr/bin/sudo",
    "/sbin/init",
    "/usr/sbin/ip",
    // The dev box (test/e2e/vm-run.test.ts runs them).
    "/usr/bin/make",
    "/usr/bin/gcc",
    "/usr/bin/g++",
    "/usr/bin/python3",
    "/usr/bin/pip3",
    "/usr/bin/jq",
    "/usr/bin/rg",
    "/usr/bin/tmux",
  ]) {
    assert.ok(await statInImage(runner, rootfs, file), `${file} is in the image`);
  }
  // Room to work beyond the content: about 1 GiB free on the root filesystem.
  const header = await runner.run("dumpe2fs", ["-h", rootfs]);
  assert.equal(header.code, 0, header.stderr);
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+)$`, "m").exec(header.stdout)?.[1]);
  const freeMiB = (field("Free blocks") * field("Block size")) / 2 ** 20;
  assert.ok(freeMiB >= 768, `${freeMiB.toFixed(0)} MiB free on the image's root filesystem`);
  const sudo = await statInImage(runner, rootfs, "/usr/bin/sudo");
  assert.deepEqual([sudo?.uid, sudo?.gid, sudo?.mode], [0, 0, 0o4755]);
  const shadow = await statInImage(runner, rootfs, "/etc/shadow");
  assert.equal(shadow?.gid, 42, "group shadow kept from the tarball");
  assert.match(
    (await catInImage(runner, rootfs, "/etc/ssh/sshd_config.d/banger.conf")) ?? "",
    /PermitRootLogin prohibit-password/,
  );
  assert.match((await catInImage(runner, rootfs, "/etc/fstab")) ?? "", /\/dev\/vdb \/root ext4/);
  assert.equal(
    await statInImage(runner, rootfs, "/usr/share/man/man1/git.1.gz"),
    null,
    "man pages excluded",
  );
});

test("a second create reuses the image and kernel; a second build under the same name is refused", async () => {
  const images = async () =>
    (
      JSON.parse((await ok("image", "list", "--json")).stdout) as Array<{
        id: string;
        name: string;
      }>
    ).map((i) => `${i.name} ${i.id}`);
  const kernels = async () => (await ok("kernel", "list", "--json")).stdout;
  const [imagesBefore, kernelsBefore] = [await images(), await kernels()];
  assert.deepEqual(imagesBefore, [`debian-bookworm ${shared.image.id}`]);
  await ok("vm", "create", "--name", "second", "--no-start", "--disk-size", "1G");
  try {
    assert.deepEqual(await images(), imagesBefore);
    assert.equal(await kernels(), kernelsBefore);
  } finally {
    await ok("vm", "delete", "second");
  }
  const again = await cli("image", "build");
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists/);
  assert.deepEqual(await images(), imagesBefore);
});
