import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import zlib from "node:zlib";
import { MODULE_LOAD_ORDER, moduleDepends, moduleKey } from "../src/kernel/initramfs.js";
import { tcgKernelArgs } from "../src/system/accel.js";
import { ensureBuilt } from "./helpers/build.js";
import { ownSharedDefaults, type SharedDefaults } from "./helpers/shared-image.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";

const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("..", import.meta.url)));

// The kernel the suite's one first run derived from this machine's apt repositories
// (test/helpers/shared-image.ts; test/image-build.test.ts checks that run's progress), then
// real boots under qemu-system-x86_64 -M microvm with TCG. Every wait is bounded.
let home: TempLayout;
let kernel: SharedDefaults["kernel"];
let kernelDir: string;
let tcgArgs: string;
let release: (() => Promise<void>) | undefined;

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-kboot-");
  // Without this a busy host makes the guest's TSC calibration fail and the boot stall.
  tcgArgs = tcgKernelArgs(await fs.readFile("/proc/cpuinfo", "utf8")).join(" ");
  const own = await ownSharedDefaults(home.env);
  release = own.release;
  kernel = own.shared.kernel;
  kernelDir = own.shared.kernelDir;
});

after(async () => {
  await release?.();
  await home?.cleanup();
});

test("debian-cloud is derived from the distribution's cloud kernel package", async () => {
  assert.equal(kernel.name, "debian-cloud");
  assert.match(kernel.source ?? "", /^apt:linux-image-.*(cloud|kvm|generic)/);
  assert.match(kernel.version ?? "", /^\d+\.\d+/);
  const vmlinuz = await fs.readFile(path.join(kernelDir, "vmlinuz"));
  assert.equal(vmlinuz.toString("latin1", 0x202, 0x206), "HdrS", "vmlinuz is a bzImage");
  const vmlinux = await fs.readFile(path.join(kernelDir, "vmlinux"));
  assert.equal(vmlinux.readUInt32BE(0), 0x7f454c46, "vmlinux is an ELF image");
  assert.ok((await fs.stat(path.join(kernelDir, "config"))).size > 0);
  const manifest = JSON.parse(await fs.readFile(path.join(kernelDir, "manifest.json"), "utf8"));
  assert.equal(manifest.version, kernel.version);
  assert.match(manifest.cmdline, /console=ttyS0/);
});

test("the initramfs loads virtio modules after their dependencies", async () => {
  const cpio = zlib.gunzipSync(await fs.readFile(path.join(kernelDir, "initrd.img")));
  // List members with the real cpio tool.
  const listing = await new Promise<string>((resolve, reject) => {
    const child = spawn("cpio", ["-t", "--quiet"]);
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.on("error", reject);
    child.on("close", () => resolve(out));
    child.stdin.end(cpio);
  });
  const members = listing.split("\n");
  assert.ok(members.includes("init"));
  assert.ok(members.includes("bin/busybox"));
  // The init loads what this list names, in its order (guest-scripts/initramfs-init.sh).
  assert.ok(members.includes(MODULE_LOAD_ORDER));
  const order = (await cpioMember(cpio, MODULE_LOAD_ORDER)).split("\n").filter(Boolean);
  for (const wanted of [
    "virtio_mmio",
    "virtio_blk",
    "virtio_net",
    "virtio_console",
    "virtio_rng",
  ]) {
    assert.ok(order.includes(wanted), `${wanted} is loaded (order: ${order.join(" ")})`);
  }
  // Each module's own depends= must come earlier in the order.
  const modulesDir = path.join(kernelDir, "modules");
  const files = (await run("find", [modulesDir, "-name", "*.ko"])).stdout.trim().split("\n");
  for (const file of files) {
    const key = moduleKey(path.basename(file, ".ko"));
    for (const dep of moduleDepends(await fs.readFile(file))) {
      assert.ok(order.indexOf(moduleKey(dep)) < order.indexOf(key), `${dep} before ${key}`);
    }
  }
});

/** One member of a cpio archive, read with the real cpio tool. */
function cpioMember(cpio: Buffer, name: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn("cpio", ["-i", "--quiet", "--to-stdout", name]);
    let out = "";
    child.stdout.on("data", (c: Buffer) => (out += c.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`cpio ${code}`))));
    child.stdin.end(cpio);
  });
}

/** A tiny ext4 root: static busybox and an init that prints a marker and powers off. */
async function tinyRoot(dir: string, initPath: string): Promise<string> {
  const tree = path.join(dir, "tree");
  await fs.mkdir(path.join(tree, "bin"), { recursive: true });
  for (const d of ["dev", "proc", "sys", "sbin"])
    await fs.mkdir(path.join(tree, d), { recursive: true });
  await fs.copyFile("/bin/busybox", path.join(tree, "bin", "busybox"));
  await fs.chmod(path.join(tree, "bin", "busybox"), 0o755);
  await fs.symlink("busybox", path.join(tree, "bin", "sh"));
  await fs.mkdir(path.dirname(path.join(tree, initPath)), { recursive: true });
  await fs.writeFile(
    path.join(tree, initPath),
    '#!/bin/sh\n/bin/busybox echo "BANGER-MARKER from $0"\n/bin/busybox poweroff -f\n',
    { mode: 0o755 },
  );
  const image = path.join(dir, "root.ext4");
  await fs.writeFile(image, "");
  await fs.truncate(image, 16 << 20);
  await run("mkfs.ext4", ["-q", "-F", "-d", tree, image], {
    env: { ...process.env, PATH: `/usr/sbin:/sbin:${process.env.PATH}` },
  });
  return image;
}

/** Boots the derived kernel + initramfs; resolves with the console output once QEMU exits (bounded). */
function boot(
  append: string,
  rootImage: string | null,
  timeoutMs = 120_000,
): Promise<{ console: string; timedOut: boolean }> {
  const args = [
    "-M",
    "microvm,acpi=on",
    "-accel",
    "tcg",
    "-m",
    "256",
    "-smp",
    "1",
    "-nographic",
    "-nodefaults",
    "-no-reboot",
    "-serial",
    "stdio",
    "-kernel",
    path.join(kernelDir, "vmlinuz"),
    "-initrd",
    path.join(kernelDir, "initrd.img"),
    "-append",
    `${append} ${tcgArgs}`,
  ];
  if (rootImage)
    args.push(
      "-drive",
      `id=root,file=${rootImage},format=raw,if=none`,
      "-device",
      "virtio-blk-device,drive=root",
    );
  return new Promise((resolve, reject) => {
    const child = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", () => {
      clearTimeout(timer);
      resolve({ console: output, timedOut });
    });
  });
}

test("boots under QEMU microvm (TCG): initramfs mounts the root disk and runs its init", async () => {
  const dir = await fs.mkdtemp(path.join(home.home, "boot-"));
  const image = await tinyRoot(dir, "sbin/init");
  const { console, timedOut } = await boot(
    "console=ttyS0 reboot=t panic=-1 rw root=/dev/vda",
    image,
  );
  assert.equal(timedOut, false, console.slice(-2000));
  assert.match(console, /BANGER-MARKER from \/sbin\/init/);
  assert.match(
    console,
    /Kernel command line: .*tsc_early_khz=\d+/,
    "TCG boots skip TSC calibration",
  );
});

test("banger.init= picks another init on the root disk", async () => {
  const dir = await fs.mkdtemp(path.join(home.home, "boot-"));
  const image = await tinyRoot(dir, "opt/first-boot");
  const { console, timedOut } = await boot(
    "console=ttyS0 reboot=t panic=-1 rw root=/dev/vda banger.init=/opt/first-boot",
    image,
  );
  assert.equal(timedOut, false, console.slice(-2000));
  assert.match(console, /BANGER-MARKER from \/opt\/first-boot/);
});

test("a missing root disk gives a clear console message and powers off instead of hanging", async () => {
  const { console, timedOut } = await boot(
    "console=ttyS0 reboot=t panic=-1 rw root=/dev/vda banger.rootwait=2",
    null,
  );
  assert.equal(timedOut, false, console.slice(-2000));
  assert.match(console, /banger-initramfs: error: root device \/dev\/vda did not appear within 2s/);
  assert.match(console, /powering off/);
});
