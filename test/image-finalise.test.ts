import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import { SSHD_DROP_IN, WORK_DISK_FSTAB_LINE } from "../src/guest/assets.js";
import { GUEST_SCRIPTS_DIR } from "../src/guest/scripts.js";
import { finaliseImage } from "../src/image/finalise.js";
import { BUILT_IMAGE_FREE_BYTES } from "../src/image/build.js";
import { createCommandRunner } from "../src/system/runner.js";
import { makeLayer } from "./helpers/layer.js";

const runner = createCommandRunner();
const exec = promisify(execFile);
let dir: string;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-final-"));
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function layerFiles(layers: Buffer[]): Promise<string[]> {
  const files: string[] = [];
  for (const [i, layer] of layers.entries()) {
    const file = path.join(dir, `layer-${i}-${Math.random().toString(16).slice(2)}`);
    await fs.writeFile(file, layer);
    files.push(file);
  }
  return files;
}

async function finalise(layers: Buffer[]) {
  const staging = await fs.mkdtemp(path.join(dir, "staging-"));
  const result = await finaliseImage({
    layers: await layerFiles(layers),
    stagingDir: staging,
    runner,
  });
  return { ...result, staging };
}

test("layers flatten oldest-first with whiteouts, opaque dirs, hardlinks, setuid and owners", async () => {
  const base = await makeLayer([
    { name: "etc/", type: "directory" },
    { name: "etc/passwd", body: "root:x:0:0::/root:/bin/sh\n" },
    { name: "etc/alternatives/", type: "directory" },
    { name: "etc/alternatives/awk", type: "symlink", linkname: "/usr/bin/mawk" },
    { name: "usr/bin/mawk", body: "mawk", mode: 0o755 },
    // root's shell is there, so finalisation keeps the top layer's passwd as it is.
    { name: "bin/bash", body: "bash", mode: 0o755 },
    { name: "usr/bin/sudo", body: "sudo", mode: 0o4755 },
    { name: "usr/bin/sudo-hard", type: "link", linkname: "usr/bin/sudo" },
    { name: "home/user/", type: "directory", uid: 1000, gid: 1000, mode: 0o700 },
    { name: "home/user/notes", body: "n", uid: 1000, gid: 1000, mode: 0o600 },
    { name: "tmp/", type: "directory", mode: 0o1777 },
    { name: "var/cache/old/a", body: "a" },
    { name: "var/cache/old/b", body: "b" },
    { name: "doomed", body: "soon gone" },
    { name: "usr/lib/systemd/system/system-systemd\\x2dcryptsetup.slice", body: "[Unit]\n" },
    { name: "usr/share/it's", body: "q" },
    { name: "dev/null", type: "character-device" },
    { name: ".dockerenv", body: "" },
  ]);
  const top = await makeLayer([
    { name: ".wh.doomed" },
    { name: "var/cache/old/.wh..wh..opq" },
    { name: "var/cache/old/c", body: "c" },
    { name: "etc/passwd", body: "root:x:0:0::/root:/bin/bash\n" },
  ]);
  const { rootfs, sizeBytes } = await finalise([base, top]);
  assert.equal(sizeBytes, 1024 ** 3, "small trees get the 1 GiB floor");

  const sudo = await statInImage(runner, rootfs, "/usr/bin/sudo");
  assert.deepEqual([sudo?.uid, sudo?.gid, sudo?.mode], [0, 0, 0o4755]);
  const hard = await statInImage(runner, rootfs, "/usr/bin/sudo-hard");
  assert.equal(hard?.mode, 0o4755);
  const home = await statInImage(runner, rootfs, "/home/user");
  assert.deepEqual([home?.uid, home?.gid, home?.mode], [1000, 1000, 0o700]);
  assert.equal((await statInImage(runner, rootfs, "/tmp"))?.mode, 0o1777);
  assert.equal((await statInImage(runner, rootfs, "/etc/alternatives/awk"))?.type, "symlink");
  const link = await runner.run("debugfs", ["-R", "stat /etc/alternatives/awk", rootfs]);
  assert.match(link.stdout, /Fast link dest: "\/usr\/bin\/mawk"/);
  assert.equal(await catInImage(runner, rootfs, "/etc/passwd"), "root:x:0:0::/root:/bin/bash\n");
  assert.equal(await statInImage(runner, rootfs, "/doomed"), null, "whiteout deleted it");
  assert.equal(
    await statInImage(runner, rootfs, "/var/cache/old/a"),
    null,
    "opaque dir dropped lower entries",
  );
  assert.equal(await catInImage(runner, rootfs, "/var/cache/old/c"), "c");
  assert.equal(await statInImage(runner, rootfs, "/dev/null"), null, "device nodes are skipped");
  assert.equal(await statInImage(runner, rootfs, "/.dockerenv"), null);
  // systemd's escaped unit names carry backslashes; they must survive.
  assert.equal(
    await catInImage(runner, rootfs, "/usr/lib/systemd/system/system-systemd\\x2dcryptsetup.slice"),
    "[Unit]\n",
  );
  assert.equal(await catInImage(runner, rootfs, "/usr/share/it's"), "q");
});

test("guest assets are injected root-owned, with the pinned sshd drop-in and the work-disk fstab line", async () => {
  const layer = await makeLayer([
    { name: "etc/fstab", body: "# static\n" },
    { name: "etc/ssh/sshd_config", body: "Port 22\n" },
  ]);
  const { rootfs } = await finalise([layer]);
  const dropIn = await catInImage(runner, rootfs, "/etc/ssh/sshd_config.d/banger.conf");
  assert.equal(dropIn, `${SSHD_DROP_IN.join("\n")}\n`);
  const lines = dropIn!.trim().split("\n");
  assert.deepEqual(lines, [
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "AuthorizedKeysFile /root/.ssh/authorized_keys",
  ]);
  for (const denied of [/LogLevel\s+DEBUG3/i, /StrictModes\s+no/i, /^PermitRootLogin\s+yes$/im]) {
    assert.doesNotMatch(dropIn!, denied);
  }
  assert.match(
    (await catInImage(runner, rootfs, "/etc/ssh/sshd_config"))!,
    /^Include \/etc\/ssh\/sshd_config\.d\/\*\.conf\nPort 22/,
  );
  assert.ok(
    (await catInImage(runner, rootfs, "/etc/fstab"))!.split("\n").includes(WORK_DISK_FSTAB_LINE),
  );
  for (const file of [
    "/usr/lib/banger/network-setup",
    "/usr/lib/banger/first-boot",
    "/etc/systemd/system/banger-network.service",
  ]) {
    const st = await statInImage(runner, rootfs, file);
    assert.deepEqual([st?.uid, st?.gid], [0, 0], file);
  }
  assert.equal((await statInImage(runner, rootfs, "/usr/lib/banger/first-boot"))?.mode, 0o755);
  const wants = await runner.run("debugfs", [
    "-R",
    "ls -l /etc/systemd/system/multi-user.target.wants",
    rootfs,
  ]);
  assert.match(wants.stdout, /banger-network\.service/);
  assert.match(wants.stdout, /banger-first-boot\.service/);
  // The injected scripts are guest-scripts/ byte for byte.
  for (const [file, script] of [
    ["network-setup", "network-setup.sh"],
    ["first-boot", "first-boot.sh"],
    ["init", "init.sh"],
    ["ssh-server", "ssh-server.sh"],
    ["login-shell", "login-shell.sh"],
  ]) {
    const dump = path.join(dir, `dump-${file}`);
    const r = await runner.run("debugfs", ["-R", `dump /usr/lib/banger/${file} ${dump}`, rootfs]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(
      await fs.readFile(dump),
      await fs.readFile(path.join(GUEST_SCRIPTS_DIR, script!)),
      file,
    );
  }
});

const hostile: Array<[string, Parameters<typeof makeLayer>[0], RegExp]> = [
  ["traversal", [{ name: "../../etc/evil", body: "x" }], /path leaves the image/],
  ["absolute path", [{ name: "/etc/evil", body: "x" }], /absolute path/],
  [
    "escaping symlink",
    [{ name: "usr/lib/x", type: "symlink", linkname: "../../../../etc" }],
    /symlink to "\.\.\/\.\.\/\.\.\/\.\.\/etc" leaves the image/,
  ],
  [
    "escaping hardlink",
    [{ name: "x", type: "link", linkname: "../etc/shadow" }],
    /path leaves the image/,
  ],
  [
    "newline in name",
    [{ name: "etc/bad\nname", body: "x" }],
    /etc\/bad\\nname.*control character or a double quote/,
  ],
  ["quote in name", [{ name: 'etc/say"hi"', body: "x" }], /control character or a double quote/],
  [
    "write through a symlink",
    [
      { name: "etc", type: "symlink", linkname: "/tmp" },
      { name: "etc/passwd", body: "x" },
    ],
    /its parent etc is a symlink/,
  ],
];

for (const [name, entries, pattern] of hostile) {
  test(`hostile layer rejected: ${name}`, async () => {
    const staging = await fs.mkdtemp(path.join(dir, "staging-"));
    await assert.rejects(
      finaliseImage({
        layers: await layerFiles([await makeLayer(entries)]),
        stagingDir: staging,
        runner,
      }),
      pattern,
    );
    assert.deepEqual(await fs.readdir(staging), [], "the tree was removed");
  });
}

test("free room asked for (a built image without --size) is free on ext4, however small the files", async () => {
  // 20,000 one-byte files: 1 KiB each in tar, over 4 KiB each on ext4 (a block and an inode).
  const entries = Array.from({ length: 20_000 }, (_, i) => ({
    name: `d${i % 100}/f${i}`,
    body: "x",
  }));
  const layers = await layerFiles([await makeLayer(entries, { gzip: false })]);
  const staging = await fs.mkdtemp(path.join(dir, "staging-"));
  const { rootfs, sizeBytes } = await finaliseImage({
    layers,
    stagingDir: staging,
    runner,
    freeBytes: BUILT_IMAGE_FREE_BYTES,
  });
  const header = (await exec("dumpe2fs", ["-h", rootfs])).stdout;
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)$`, "m").exec(header)?.[1]);
  const free = field("Free blocks") * field("Block size");
  assert.ok(
    free >= BUILT_IMAGE_FREE_BYTES,
    `${Math.floor(free / 2 ** 20)} MiB free of ${sizeBytes / 2 ** 20} MiB; wanted ${BUILT_IMAGE_FREE_BYTES / 2 ** 20}`,
  );
});

test("a layer that ends inside a file is refused, not waited on forever", async () => {
  // The layer's end arrives while the member's parents are still being made: the member's
  // data was then awaited on a destroyed stream, forever (found by bench/fuzz-flatten.ts).
  for (const [size, keep] of [
    [2 * 1024 * 1024, 600 * 1024],
    [2 * 1024 * 1024, 100],
    [4096, 100],
  ] as const) {
    const staging = await fs.mkdtemp(path.join(dir, "staging-"));
    const whole = await makeLayer([{ name: "a/b/c/d/big", body: Buffer.alloc(size, 1) }], {
      gzip: false,
    });
    let timer: NodeJS.Timeout | undefined;
    await assert.rejects(
      Promise.race([
        finaliseImage({
          layers: await layerFiles([whole.subarray(0, 512 + keep)]),
          stagingDir: staging,
          runner,
        }),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error("still waiting after 5 s")), 5_000);
        }),
      ]),
      /cannot read image layer .*Unexpected end of data/,
      `${keep} of ${size} bytes`,
    );
    clearTimeout(timer);
    assert.deepEqual(await fs.readdir(staging), [], "the tree was removed");
  }
});

test("a directory entry that claims data is refused (tar-stream would wait for it forever)", async () => {
  const staging = await fs.mkdtemp(path.join(dir, "staging-"));
  const raw = await makeLayer([{ name: "d/", type: "directory" }], { gzip: false });
  raw.write("00000001000", 124, "ascii");
  raw.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += raw[i]!;
  raw.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
  await assert.rejects(
    finaliseImage({ layers: await layerFiles([raw]), stagingDir: staging, runner }),
    /a directory entry cannot carry data/,
  );
  assert.deepEqual(await fs.readdir(staging), [], "the tree was removed");
});

test("free space is checked before writing", async () => {
  const { ensureFreeSpace, freeBytes } = await import("../src/image/limits.js");
  const free = await freeBytes(dir);
  await ensureFreeSpace(dir, 1024 * 1024, "a small write");
  await assert.rejects(
    ensureFreeSpace(dir, free, "the test's image"),
    /not enough disk space for the test's image: it needs about .* free/,
  );
});

test("removeTree removes deep and wide trees without following symlinks", async () => {
  const { removeTree } = await import("../src/util/remove-tree.js");
  const victim = await fs.mkdtemp(path.join(dir, "victim-"));
  await fs.writeFile(path.join(victim, "keep"), "k");
  const tree = await fs.mkdtemp(path.join(dir, "tree-"));
  await fs.symlink(victim, path.join(tree, "link"));
  await fs.mkdir(path.join(tree, "wide"));
  for (let i = 0; i < 1500; i++) await fs.writeFile(path.join(tree, "wide", `f${i}`), "");
  let deep = path.join(tree, "deep");
  for (let i = 0; i < 300; i++) deep = path.join(deep, "d");
  await fs.mkdir(deep, { recursive: true });
  await removeTree(tree);
  await assert.rejects(fs.lstat(tree), /ENOENT/);
  assert.deepEqual(await fs.readdir(victim), ["keep"]);
  await removeTree(path.join(dir, "never-existed"));
});

test("corrupt compressed layers do not leak file descriptors", async () => {
  const { flattenLayers } = await import("../src/image/oci/flatten.js");
  const gz = await makeLayer([{ name: "f", body: "x".repeat(100_000) }]);
  const zst = (await import("zstd-napi")).compress(
    await makeLayer([{ name: "f", body: "x".repeat(100_000) }], { gzip: false }),
  );
  const bad = await layerFiles([
    Buffer.concat([gz.subarray(0, 20), Buffer.alloc(64, 0xaa)]),
    Buffer.concat([zst.subarray(0, 20), Buffer.alloc(64, 0xaa)]),
  ]);
  const openFds = async () => (await fs.readdir("/proc/self/fd")).length;
  const before = await openFds();
  for (let i = 0; i < 40; i++) {
    const root = await fs.mkdtemp(path.join(dir, "fd-"));
    await assert.rejects(flattenLayers([bad[i % 2]!], root), /cannot read image layer/);
    await fs.rm(root, { recursive: true, force: true });
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.ok((await openFds()) - before < 5, `open fds grew from ${before} to ${await openFds()}`);
});
