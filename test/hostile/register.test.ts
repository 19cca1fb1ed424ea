// Hostile files for `image register` through the daemon's image.register RPC: every row is
// refused with a message that says what the file is, the daemon stays up, nothing is left.
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

let daemon: HostileDaemon;
let dir: string;
const sbin = { ...process.env, PATH: `/usr/sbin:/sbin:${process.env.PATH}` };
const f = (name: string) => path.join(dir, name);

before(async () => {
  daemon = await hostileDaemon();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-hostile-register-"));
  const magicOnly = (size: number) => {
    const b = Buffer.alloc(size);
    b.writeUInt16LE(0xef53, 1080);
    return b;
  };
  await fs.writeFile(f("magic-4k"), magicOnly(4096));
  await fs.writeFile(f("magic-1m"), magicOnly(1024 * 1024));
  await fs.writeFile(f("empty"), "");
  await fs.writeFile(f("zeros"), Buffer.alloc(1024 * 1024));
  await fs.writeFile(
    f("random"),
    Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 7919) & 0xff)),
  );
  await fs.mkdir(f("a-directory"));
  execFileSync("mkfifo", [f("fifo")]);
  await fs.symlink("/etc/shadow", f("to-shadow"));
  await fs.symlink("/dev/zero", f("to-dev-zero"));
  await fs.symlink(f("loop-b"), f("loop-a"));
  await fs.symlink(f("loop-a"), f("loop-b"));
  await fs.writeFile(f("good.ext4"), "");
  await fs.truncate(f("good.ext4"), 64 * 1024 * 1024);
  execFileSync("mkfs.ext4", ["-q", "-F", f("good.ext4")], { env: sbin });
  await fs.copyFile(f("good.ext4"), f("truncated.ext4"));
  await fs.truncate(f("truncated.ext4"), 1024 * 1024);
  await fs.writeFile(f("shell.sh"), "#!/bin/sh\n".padEnd(128 * 1024, "#"));
});
after(async () => {
  await daemon?.close();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

type Params = Record<string, unknown>;
const reg = (rootfs: string, extra: Params = {}): Params => ({
  name: "reg",
  rootfs,
  kernelRef: "no-such-kernel",
  ...extra,
});
const rows = (): Array<HostileRow<Params>> => [
  { name: "magic only, 4 KiB", input: reg(f("magic-4k")), expect: /too small \(4096 bytes\)/ },
  {
    name: "magic only, 1 MiB",
    input: reg(f("magic-1m")),
    expect: /not a valid ext4 filesystem \(.*superblock/,
  },
  { name: "missing file", input: reg(f("nope.ext4")), expect: /no such file/ },
  { name: "missing directory", input: reg(f("nope/disk.ext4")), expect: /no such file/ },
  { name: "under a regular file", input: reg(`${f("empty")}/disk.ext4`), expect: /no such file/ },
  { name: "a directory", input: reg(f("a-directory")), expect: /is a directory/ },
  { name: "a FIFO (must not hang)", input: reg(f("fifo")), expect: /not a regular file/ },
  {
    name: "symlink to /etc/shadow",
    input: reg(f("to-shadow")),
    expect: /cannot register .*(too small|not .*ext4|permission denied)/,
  },
  { name: "symlink to /dev/zero", input: reg(f("to-dev-zero")), expect: /not a regular file/ },
  { name: "/dev/zero", input: reg("/dev/zero"), expect: /not a regular file/ },
  { name: "/dev/null", input: reg("/dev/null"), expect: /not a regular file/ },
  { name: "/proc/self/mem", input: reg("/proc/self/mem"), expect: /too small|not a regular file/ },
  { name: "symlink loop", input: reg(f("loop-a")), expect: /too many levels of symlinks/ },
  { name: "empty file", input: reg(f("empty")), expect: /too small \(0 bytes\)/ },
  { name: "1 MiB of zeros", input: reg(f("zeros")), expect: /no ext4 superblock/ },
  { name: "1 MiB of noise", input: reg(f("random")), expect: /no ext4 superblock/ },
  { name: "a shell script", input: reg(f("shell.sh")), expect: /no ext4 superblock/ },
  {
    name: "truncated ext4",
    input: reg(f("truncated.ext4")),
    expect:
      /truncated: its superblock says 67108864 bytes|not a valid ext4 filesystem \(.*short read/,
  },
  { name: "newline in the path", input: reg(`${dir}/x\ny.ext4`), expect: /no such file/ },
  { name: "the root directory", input: reg("/"), expect: /is a directory/ },
  {
    name: "valid ext4, unknown kernel",
    input: reg(f("good.ext4")),
    expect: /no kernel named "no-such-kernel"/,
  },
  {
    name: "valid ext4, hostile name",
    input: reg(f("good.ext4"), { name: "../evil" }),
    expect: /invalid image name/,
  },
  {
    name: "kernel-ref and kernel together",
    input: reg(f("good.ext4"), { kernel: f("empty") }),
    expect: /mutually exclusive/,
  },
  {
    name: "no kernel at all",
    input: { name: "reg", rootfs: f("good.ext4") },
    expect: /needs a kernel/,
  },
  {
    name: "initrd without a kernel",
    input: reg(f("good.ext4"), { initrd: f("empty") }),
    expect: /mutually exclusive|go with --kernel/,
  },
  { name: "empty rootfs parameter", input: reg(""), expect: /rootfs|invalid/i },
];

test("hostile files for image register are refused clearly and leave nothing", async () => {
  const client = await daemon.connect();
  try {
    await runTable(
      rows(),
      (params) =>
        Promise.race([
          client.call("image.register", params as never),
          new Promise((_, reject) =>
            setTimeout(() => reject(new Error("no answer in 15 s")), 15_000).unref(),
          ),
        ]),
      { daemon, roots: [daemon.home.home] },
    );
  } finally {
    client.close();
  }
});
