import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { BangerError } from "../src/api/errors.js";
import { parseConfig } from "../src/config/config.js";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import { createRootOverlay, createWorkDisk } from "../src/disk/work-disk.js";
import { guestRelative } from "../src/guest/file-sync.js";
import { createCommandRunner } from "../src/system/runner.js";

// Real mkfs.ext4 and debugfs: the work disk is built and read back exactly as a VM would see it.
const runner = createCommandRunner();
let dir: string;
let home: string;

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-filesync-"));
  home = path.join(dir, "home");
  await fs.mkdir(path.join(home, ".config", "tool", "sub"), { recursive: true });
  await fs.writeFile(path.join(home, ".gitconfig"), "[user]\n\tname = Test\n", { mode: 0o644 });
  await fs.writeFile(path.join(home, "token"), "secret\n", { mode: 0o644 });
  await fs.writeFile(path.join(home, ".config", "tool", "run.sh"), "#!/bin/sh\n", { mode: 0o755 });
  await fs.writeFile(path.join(home, ".config", "tool", "sub", "conf"), "x=1\n", { mode: 0o640 });
  await fs.symlink("run.sh", path.join(home, ".config", "tool", "latest"));
  await fs.chmod(path.join(home, ".config", "tool"), 0o750);
  // A dotfile that is a symlink into a dotfiles checkout: the file itself is copied.
  await fs.writeFile(path.join(home, "real-vimrc"), "set nu\n");
  await fs.symlink(path.join(home, "real-vimrc"), path.join(home, ".vimrc"));
});

after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function config(toml: string) {
  return parseConfig(toml, "config.toml").fileSync;
}

test("file_sync lands root-owned with the entry's mode; directories keep each file's mode", async () => {
  const disk = path.join(dir, "work1.ext4");
  const result = await createWorkDisk({
    file: disk,
    sizeBytes: 64 * 2 ** 20,
    authorizedKey: "ssh-ed25519 AAAA banger",
    runner,
    homeDir: home,
    fileSync: config(`
[[file_sync]]
host = "~/.gitconfig"
guest = "~/.gitconfig"

[[file_sync]]
host = "${home}/token"
guest = "/root/.secrets/token"
mode = "0400"

[[file_sync]]
host = "~/.config/tool"
guest = "~/.config/tool"

[[file_sync]]
host = "~/.vimrc"
guest = "~/.vimrc"

[[file_sync]]
host = "~/does-not-exist"
guest = "~/nothing"
`),
  });
  assert.deepEqual(result.warnings, [
    "file_sync: ~/does-not-exist does not exist on this host; skipped",
  ]);
  assert.deepEqual(
    result.synced.map((s) => [s.guest, s.kind, s.files]),
    [
      [".gitconfig", "file", 1],
      [".secrets/token", "file", 1],
      [".config/tool", "dir", 3],
      [".vimrc", "file", 1],
    ],
  );
  const stat = (p: string) => statInImage(runner, disk, p);
  const expect = async (p: string, mode: number, type: string) => {
    const st = await stat(p);
    assert.ok(st, `${p} missing`);
    assert.equal(st.uid, 0, `${p} uid`);
    assert.equal(st.gid, 0, `${p} gid`);
    assert.equal((st.mode & 0o7777).toString(8), mode.toString(8), `${p} mode`);
    assert.equal(st.type, type, `${p} type`);
  };
  await expect("/.gitconfig", 0o600, "regular");
  await expect("/.secrets", 0o755, "directory");
  await expect("/.secrets/token", 0o400, "regular");
  await expect("/.config", 0o755, "directory");
  await expect("/.config/tool", 0o750, "directory");
  await expect("/.config/tool/run.sh", 0o755, "regular");
  await expect("/.config/tool/sub/conf", 0o640, "regular");
  await expect("/.config/tool/latest", 0o777, "symlink");
  await expect("/.vimrc", 0o600, "regular");
  await expect("/.ssh/authorized_keys", 0o600, "regular");
  assert.equal(await catInImage(runner, disk, "/.secrets/token"), "secret\n");
  assert.equal(await catInImage(runner, disk, "/.vimrc"), "set nu\n");
  assert.equal(await stat("/nothing"), null);
});

test("a file_sync error aborts the work disk and leaves no file behind", async () => {
  const bad = path.join(home, "bad-dir");
  await fs.mkdir(bad);
  await fs.writeFile(path.join(bad, 'has"quote'), "x");
  const disk = path.join(dir, "work2.ext4");
  // A TMPDIR of this test's own, so the staging dir is told from other tests' work in /tmp.
  const tmp = await fs.mkdtemp(path.join(home, "tmp-"));
  const savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = tmp;
  const made = assert.rejects(
    createWorkDisk({
      file: disk,
      sizeBytes: 64 * 2 ** 20,
      authorizedKey: "ssh-ed25519 AAAA banger",
      runner,
      homeDir: home,
      fileSync: config(`[[file_sync]]\nhost = "${bad}"\nguest = "~/bad"\n`),
    }),
    (err: unknown) => err instanceof BangerError && /double quote/.test(err.message),
  );
  try {
    await made;
  } finally {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
  }
  await assert.rejects(fs.stat(disk), { code: "ENOENT" });
  assert.deepEqual(await fs.readdir(tmp), [], "the staging dir is removed");
});

test("file_sync guest paths stay under /root and never replace banger's key", () => {
  assert.equal(guestRelative("~/.gitconfig"), ".gitconfig");
  assert.equal(guestRelative("/root/a//b/"), "a/b");
  assert.throws(() => guestRelative("~/../etc/passwd"), /does not name a file under \/root/);
  assert.throws(() => guestRelative("~/.ssh/authorized_keys"), /banger's SSH key/);
  assert.throws(() => guestRelative("/root/"), /does not name a file/);
});

test("the work disk holding synced secrets and the root overlay are readable by the user only", async () => {
  // Under the usual umask 022 a plain create would give 0644: anyone on the host could read them.
  const old = process.umask(0o022);
  try {
    const disk = path.join(dir, "work-mode.ext4");
    await createWorkDisk({
      file: disk,
      sizeBytes: 64 * 2 ** 20,
      authorizedKey: "ssh-ed25519 AAAA banger",
      runner,
      homeDir: home,
      fileSync: config(`[[file_sync]]\nhost = "${home}/token"\nguest = "~/token"\n`),
    });
    assert.equal((await fs.stat(disk)).mode & 0o777, 0o600);
    const overlay = path.join(dir, "root-mode.qcow2");
    await createRootOverlay({ backing: disk, file: overlay, runner });
    assert.equal((await fs.stat(overlay)).mode & 0o777, 0o600);
  } finally {
    process.umask(old);
  }
});
