import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { catInImage, statInImage } from "../src/disk/ext4.js";
import type { EntryMeta } from "../src/disk/entry-meta.js";
import { guestAssets } from "../src/guest/assets.js";
import { loadGuestScripts } from "../src/guest/scripts.js";
import {
  GUEST_POWEROFF_COMMAND,
  hostToolkit,
  parseAppletList,
  parseLdd,
  TOOLKIT_INTERPRETER,
  TOOLKIT_SHELL,
  withInterpreter,
  type HostToolkit,
} from "../src/guest/toolkit.js";
import { finaliseImage, injectGuestAssets } from "../src/image/finalise.js";
import { BANGER_INIT, IMAGE_INIT, initKernelArgs, pickInit } from "../src/image/guest-init.js";
import { MAX_TREE_TEXT_BYTES, resolveInTree } from "../src/image/guest-tree.js";
import { ensureRootLogin, ROOT_ENTRY } from "../src/image/root-login.js";
import { createCommandRunner } from "../src/system/runner.js";
import { makeLayer, type LayerEntry } from "./helpers/layer.js";

const runner = createCommandRunner();
let dir: string;
let toolkit: HostToolkit;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-toolkit-"));
  toolkit = await hostToolkit(runner);
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** A tree on disk, as flatten leaves it: files, dirs and symlinks. */
async function tree(entries: LayerEntry[]): Promise<string> {
  const root = await fs.mkdtemp(path.join(dir, "tree-"));
  for (const e of entries) {
    const abs = path.join(root, e.name);
    await fs.mkdir(path.dirname(abs), { recursive: true });
    if (e.type === "directory") await fs.mkdir(abs, { recursive: true });
    else if (e.type === "symlink") await fs.symlink(e.linkname!, abs);
    else await fs.writeFile(abs, e.body ?? "", { mode: e.mode ?? 0o644 });
  }
  return root;
}

const table = () => new Map<string, EntryMeta>();

test("the toolkit is busybox and dropbear with the libraries and loader ldd names, all under /usr/lib/banger", async (t) => {
  const paths = toolkit.files.map((f) => f.path);
  for (const p of paths) assert.match(p, /^usr\/lib\/banger\/(bin|lib)\/[^/]+$/, p);
  for (const p of [
    "usr/lib/banger/bin/busybox",
    "usr/lib/banger/bin/dropbear",
    "usr/lib/banger/bin/dropbearkey",
    "usr/lib/banger/lib/ld-linux-x86-64.so.2",
    "usr/lib/banger/lib/libc.so.6",
  ])
    assert.ok(paths.includes(p), p);
  // Where the bytes are, largest first (docs/internals/architecture.md explains each).
  const sizes: Array<[string, number]> = [];
  for (const f of toolkit.files)
    sizes.push([path.basename(f.path), (await fs.stat(f.source)).size]);
  sizes.sort(([, a], [, b]) => b - a);
  const bytes = sizes.reduce((sum, [, size]) => sum + size, 0);
  const mib = (n: number) => (n / 2 ** 20).toFixed(2);
  t.diagnostic(`toolkit: ${toolkit.files.length} files, ${mib(bytes)} MiB`);
  t.diagnostic(sizes.map(([name, size]) => `${name} ${mib(size)}`).join(", "));
});

test("busybox's applets each get a link beside it; a name that is not an applet's is refused", () => {
  for (const name of ["sh", "ip", "tar", "mount", "poweroff", "hostname", "["])
    assert.ok(toolkit.applets.includes(name), name);
  assert.ok(!toolkit.applets.includes("busybox"));
  assert.deepEqual(parseAppletList("[\n[[\nrun-parts\nbusybox\n"), ["[", "[[", "run-parts"]);
  for (const bad of ["../../etc/passwd", "a/b", "..", "sh\u001b"])
    assert.throws(() => parseAppletList(`sh\n${bad}\n`), /which is not an applet name/, bad);
});

test("the copied dropbear names banger's loader: PT_INTERP rewritten in place, or refused when it cannot be", async () => {
  const dropbear = await fs.readFile("/usr/sbin/dropbear");
  const patched = withInterpreter(dropbear, TOOLKIT_INTERPRETER, "dropbear");
  assert.equal(patched.length, dropbear.length);
  const readelf = path.join(dir, "patched-dropbear");
  await fs.writeFile(readelf, patched);
  const r = await runner.run("readelf", ["-l", readelf]);
  assert.match(r.stdout, /Requesting program interpreter: \/usr\/lib\/banger\/lib\/ld\.so\]/);
  assert.throws(
    () => withInterpreter(dropbear, `/${"x".repeat(40)}`, "dropbear"),
    /does not fit its 27-byte interpreter path/,
  );
  assert.throws(() => withInterpreter(Buffer.from("#!/bin/sh\n"), "/a", "s"), /not a 64-bit/);
  const busybox = await fs.readFile("/bin/busybox");
  assert.throws(() => withInterpreter(busybox, "/a", "busybox"), /has no PT_INTERP/);
  for (const name of ["dropbear", "dropbearkey"])
    assert.equal(
      toolkit.files.find((f) => f.path === `usr/lib/banger/bin/${name}`)?.interpreter,
      "/usr/lib/banger/lib/ld.so",
    );
});

test("ldd's output: libraries by soname, the loader apart; anything unresolved is refused", () => {
  const found = parseLdd(
    [
      "\tlinux-vdso.so.1 (0x00007ffd)",
      "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f01)",
      "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)",
      "\t/lib64/ld-linux-x86-64.so.2 (0x00007f03)",
      "",
    ].join("\n"),
    "/usr/sbin/dropbear",
  );
  assert.deepEqual(
    [...found.libs],
    [
      ["libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1"],
      ["libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"],
    ],
  );
  assert.equal(found.loader, "/lib64/ld-linux-x86-64.so.2");
  assert.throws(
    () => parseLdd("\tlibgone.so.1 => not found\n\t/lib64/ld-linux-x86-64.so.2 (0x1)\n", "x"),
    /ldd says "libgone\.so\.1 => not found"/,
  );
  assert.throws(
    () => parseLdd("\t/lib/ld-musl-x86_64.so.1 (0x1)\n", "x"),
    /its loader is \/lib\/ld-musl-x86_64\.so\.1, not ld-linux-x86-64\.so\.2/,
  );
});

test("outside /usr/lib/banger, banger adds only its systemd units, the sshd drop-in and /var/lib/banger", () => {
  const outside = guestAssets(loadGuestScripts(), toolkit)
    .map((a) => a.path)
    .filter((p) => !p.startsWith("usr/lib/banger"));
  assert.deepEqual(outside.sort(), [
    "etc/ssh/sshd_config.d",
    "etc/ssh/sshd_config.d/banger.conf",
    "etc/systemd/system/banger-first-boot.service",
    "etc/systemd/system/banger-network.service",
    "etc/systemd/system/banger-ssh.service",
    "etc/systemd/system/multi-user.target.wants",
    "etc/systemd/system/multi-user.target.wants/banger-first-boot.service",
    "etc/systemd/system/multi-user.target.wants/banger-network.service",
    "etc/systemd/system/multi-user.target.wants/banger-ssh.service",
    "var/lib/banger",
  ]);
});

test("the init: the image's systemd, else banger's (which hands over to another /sbin/init itself)", async () => {
  const systemd = await tree([
    { name: "usr/lib/systemd/systemd", body: "elf", mode: 0o755 },
    { name: "usr/sbin/init", type: "symlink", linkname: "../lib/systemd/systemd" },
    { name: "sbin", type: "symlink", linkname: "usr/sbin" },
  ]);
  assert.equal(await pickInit(systemd), IMAGE_INIT);
  const busyboxInit = await tree([
    { name: "bin/busybox", body: "elf", mode: 0o755 },
    { name: "sbin/init", type: "symlink", linkname: "/bin/busybox" },
  ]);
  assert.equal(await pickInit(busyboxInit), BANGER_INIT);
  assert.equal(await pickInit(await tree([{ name: "bin/busybox", body: "elf" }])), BANGER_INIT);
  // A link named systemd that leads nowhere is not systemd.
  const dangling = await tree([
    { name: "sbin/init", type: "symlink", linkname: "/lib/systemd/systemd" },
  ]);
  assert.equal(await pickInit(dangling), BANGER_INIT);
  assert.deepEqual(initKernelArgs(IMAGE_INIT), []);
  assert.deepEqual(initKernelArgs(null), []);
  assert.deepEqual(initKernelArgs(BANGER_INIT), ["banger.init=/usr/lib/banger/init"]);
});

test("paths resolve inside the tree: absolute links from its root, '..' never above it, loops end", async () => {
  // Each of these would name the host's /bin/busybox if the OS followed them.
  const root = await tree([
    { name: "sbin/up", type: "symlink", linkname: "../../../../../../../bin/busybox" },
    { name: "sbin/abs", type: "symlink", linkname: "/bin/busybox" },
    { name: "via", type: "symlink", linkname: "/" },
    { name: "loop/a", type: "symlink", linkname: "b" },
    { name: "loop/b", type: "symlink", linkname: "a" },
  ]);
  assert.equal(await resolveInTree(root, "/sbin/up"), null);
  assert.equal(await resolveInTree(root, "/sbin/abs"), null);
  assert.equal(await resolveInTree(root, "/via/bin/busybox"), null);
  assert.equal(await resolveInTree(root, "/loop/a"), null);
  await fs.mkdir(path.join(root, "bin"));
  await fs.writeFile(path.join(root, "bin/busybox"), "mine");
  for (const p of ["/sbin/up", "/sbin/abs", "/via/bin/busybox", "/bin/../bin/busybox"])
    assert.equal((await resolveInTree(root, p))?.rel, "bin/busybox", p);
});

test("root's login: a passwd is written, root added, a missing shell replaced, /etc/shells lists it", async () => {
  const none = await tree([{ name: "bin/busybox", body: "elf", mode: 0o755 }]);
  const entries = table();
  assert.equal(await ensureRootLogin(none, entries), "passwd-written");
  assert.equal(await fs.readFile(path.join(none, "etc/passwd"), "utf8"), `${ROOT_ENTRY}\n`);
  assert.equal(ROOT_ENTRY, "root:x:0:0:root:/root:/usr/lib/banger/login-shell");
  assert.equal(await fs.readFile(path.join(none, "etc/group"), "utf8"), "root:x:0:\n");
  assert.equal(await fs.readFile(path.join(none, "etc/shells"), "utf8"), `${TOOLKIT_SHELL}\n`);
  for (const f of ["etc", "etc/passwd", "etc/group", "etc/shells"])
    assert.equal(entries.get(f)?.uid, 0, f);
  assert.equal(entries.get("etc/passwd")?.mode, 0o100644);

  const noRoot = await tree([{ name: "etc/passwd", body: "app:x:1000:1000::/home/app:/bin/sh" }]);
  assert.equal(await ensureRootLogin(noRoot, table()), "root-added");
  assert.equal(
    await fs.readFile(path.join(noRoot, "etc/passwd"), "utf8"),
    `app:x:1000:1000::/home/app:/bin/sh\n${ROOT_ENTRY}\n`,
  );

  const nologin = await tree([
    {
      name: "etc/passwd",
      body: "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534::/:/sbin/nologin\n",
    },
    { name: "etc/shells", body: "/bin/sh\n" },
  ]);
  assert.equal(await ensureRootLogin(nologin, table()), "shell-replaced");
  assert.equal(
    await fs.readFile(path.join(nologin, "etc/passwd"), "utf8"),
    `${ROOT_ENTRY}\nnobody:x:65534:65534::/:/sbin/nologin\n`,
  );
  assert.equal(
    await fs.readFile(path.join(nologin, "etc/shells"), "utf8"),
    `/bin/sh\n${TOOLKIT_SHELL}\n`,
  );

  const bash = await tree([
    { name: "etc/passwd", body: "root:x:0:0:root:/root:/bin/bash\n" },
    { name: "usr/bin/bash", body: "elf", mode: 0o755 },
    { name: "bin", type: "symlink", linkname: "usr/bin" },
  ]);
  assert.equal(await ensureRootLogin(bash, table()), "kept");
  assert.equal(
    await fs.readFile(path.join(bash, "etc/passwd"), "utf8"),
    "root:x:0:0:root:/root:/bin/bash\n",
  );
  assert.equal(await fs.readFile(path.join(bash, "etc/shells"), "utf8"), "/bin/bash\n");
});

test("root's login never writes through the image's links, and leaves a hardlinked passwd's twin alone", async () => {
  const linked = await tree([{ name: "etc/passwd", type: "symlink", linkname: "/etc/passwd" }]);
  await assert.rejects(
    ensureRootLogin(linked, table()),
    /\/etc\/passwd in the image is not a regular file/,
  );
  const etcLink = await tree([{ name: "etc", type: "symlink", linkname: "/etc" }]);
  await assert.rejects(ensureRootLogin(etcLink, table()), /\/etc in the image is not a directory/);

  const twin = await tree([{ name: "etc/passwd", body: "root:x:0:0::/root:/bin/gone\n" }]);
  await fs.link(path.join(twin, "etc/passwd"), path.join(twin, "passwd-twin"));
  assert.equal(await ensureRootLogin(twin, table()), "shell-replaced");
  assert.equal(
    await fs.readFile(path.join(twin, "passwd-twin"), "utf8"),
    "root:x:0:0::/root:/bin/gone\n",
  );
});

test("the image's fstab and sshd_config are replaced by rename (a hardlinked twin keeps its text) and read only when small", async () => {
  const root = await tree([
    { name: "etc/fstab", body: "# static\n" },
    { name: "etc/ssh/sshd_config", body: "Port 22\n" },
  ]);
  await fs.link(path.join(root, "etc/fstab"), path.join(root, "fstab-twin"));
  await fs.link(path.join(root, "etc/ssh/sshd_config"), path.join(root, "sshd-twin"));
  await injectGuestAssets(root, table(), loadGuestScripts(), toolkit);
  assert.match(await fs.readFile(path.join(root, "etc/fstab"), "utf8"), /^\/dev\/vdb \/root ext4/m);
  assert.equal(await fs.readFile(path.join(root, "fstab-twin"), "utf8"), "# static\n");
  assert.match(await fs.readFile(path.join(root, "etc/ssh/sshd_config"), "utf8"), /^Include /);
  assert.equal(await fs.readFile(path.join(root, "sshd-twin"), "utf8"), "Port 22\n");

  for (const file of ["etc/fstab", "etc/ssh/sshd_config", "etc/passwd"]) {
    const big = await tree([{ name: file, body: "#".repeat(MAX_TREE_TEXT_BYTES + 1) }]);
    await assert.rejects(
      injectGuestAssets(big, table(), loadGuestScripts(), toolkit),
      new RegExp(`/${file.replace(/\//g, "\\/")} in the image is larger than 1024 KiB`),
      file,
    );
  }
});

test("a busybox-only image gets the toolkit root-owned with its modes, banger's init, a passwd and the record", async () => {
  const layer = await makeLayer([
    { name: "bin/", type: "directory" },
    { name: "bin/busybox", body: await fs.readFile("/bin/busybox"), mode: 0o755 },
  ]);
  const layerFile = path.join(dir, "busybox-layer");
  await fs.writeFile(layerFile, layer);
  const staging = await fs.mkdtemp(path.join(dir, "staging-"));
  const result = await finaliseImage({ layers: [layerFile], stagingDir: staging, runner, toolkit });
  assert.equal(result.init, BANGER_INIT);
  assert.equal(result.rootLogin, "passwd-written");
  for (const f of toolkit.files) {
    const st = await statInImage(runner, result.rootfs, `/${f.path}`);
    assert.deepEqual([st?.type, st?.uid, st?.gid, st?.mode], ["regular", 0, 0, 0o755], f.path);
  }
  for (const script of ["init", "ssh-server", "network-setup", "first-boot", "login-shell"]) {
    const st = await statInImage(runner, result.rootfs, `/usr/lib/banger/${script}`);
    assert.deepEqual([st?.uid, st?.mode], [0, 0o755], script);
  }
  const ldso = await runner.run("debugfs", ["-R", "stat /usr/lib/banger/lib/ld.so", result.rootfs]);
  assert.match(ldso.stdout, /Fast link dest: "ld-linux-x86-64\.so\.2"/);
  for (const applet of ["sh", "ip", "tar", "poweroff"]) {
    const link = await runner.run("debugfs", [
      "-R",
      `stat /usr/lib/banger/bin/${applet}`,
      result.rootfs,
    ]);
    assert.match(link.stdout, /Fast link dest: "busybox"/, applet);
  }
  assert.equal(await catInImage(runner, result.rootfs, "/etc/passwd"), `${ROOT_ENTRY}\n`);
  assert.equal((await statInImage(runner, result.rootfs, "/etc/passwd"))?.mode, 0o644);
  assert.deepEqual(
    JSON.parse((await catInImage(runner, result.rootfs, "/usr/lib/banger/finalise.json"))!),
    { init: BANGER_INIT, rootLogin: "passwd-written" },
  );
});

test("banger asks for poweroff systemd's way, then the image's, then busybox's", () => {
  assert.equal(
    GUEST_POWEROFF_COMMAND,
    "systemctl poweroff || poweroff || /usr/lib/banger/bin/busybox poweroff",
  );
});
