import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import { test } from "node:test";
import zlib from "node:zlib";
import { parseImageDependency } from "../src/kernel/debian.js";
import { loadGuestScripts } from "../src/guest/scripts.js";
import {
  buildInitramfs,
  isStaticElf,
  MODULE_LOAD_ORDER,
  moduleDepends,
  resolveModuleOrder,
  writeCpio,
} from "../src/kernel/initramfs.js";
import { decodeLz4Block, decodeLz4Legacy, extractVmlinux } from "../src/kernel/vmlinux.js";

test("apt-cache depends output names the real image package", () => {
  const out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
  assert.equal(parseImageDependency(out), "linux-image-6.1.0-56-cloud-amd64");
  assert.equal(
    parseImageDependency("linux-image-virtual\n  Depends: <linux-image-6.8.0-45-generic>\n"),
    null,
  );
  assert.equal(parseImageDependency("nothing here"), null);
});

const ko = (depends: string) =>
  Buffer.from(`\u007fELF junk\0license=GPL\0depends=${depends}\0intree=Y\0`, "latin1");

test("module depends= is read from .modinfo strings", () => {
  assert.deepEqual(moduleDepends(ko("virtio,virtio_ring")), ["virtio", "virtio_ring"]);
  assert.deepEqual(moduleDepends(ko("")), []);
  assert.deepEqual(moduleDepends(Buffer.from("no modinfo")), []);
});

test("module order puts dependencies first, skips built-ins, reports missing deps", async () => {
  const files: Record<string, Buffer> = {
    "/m/virtio_net.ko": ko("net_failover,virtio"),
    "/m/net_failover.ko": ko("failover"),
    "/m/failover.ko": ko(""),
    "/m/virtio.ko": ko(""),
    "/m/virtio_rng.ko": ko("virtio"),
  };
  const index = new Map(Object.keys(files).map((f) => [f.slice(3, -3), f]));
  const read = async (f: string) => files[f]!;
  const order = await resolveModuleOrder(["virtio_net", "virtio-rng", "virtio_blk"], index, read);
  assert.deepEqual(
    order.map((m) => m.key),
    ["failover", "net_failover", "virtio", "virtio_net", "virtio_rng"],
  );
  const broken = new Map([["a", "/m/a.ko"]]);
  await assert.rejects(
    resolveModuleOrder(["a"], broken, async () => ko("b")),
    /module a depends on b, which is missing/,
  );
});

test("newc cpio: headers, 4-byte alignment and trailer", () => {
  const cpio = writeCpio([
    { name: "init", mode: 0o100755, data: Buffer.from("#!/bin/sh\n") },
    { name: "bin/sh", mode: 0o120777, linkTarget: "busybox" },
  ]);
  assert.equal(cpio.toString("latin1", 0, 6), "070701");
  assert.equal(cpio.length % 4, 0);
  assert.ok(cpio.includes(Buffer.from("TRAILER!!!\0")));
  // filesize field of the first entry (7th field) is the data length.
  assert.equal(Number.parseInt(cpio.toString("latin1", 6 + 6 * 8, 6 + 7 * 8), 16), 10);
});

test("the initramfs holds guest-scripts/initramfs-init.sh as /init and the module order beside it", () => {
  const { initramfsInit } = loadGuestScripts();
  const gz = buildInitramfs({
    busybox: Buffer.from("busybox"),
    modules: [
      { key: "virtio", data: Buffer.from("ko-1") },
      { key: "virtio_blk", data: Buffer.from("ko-2") },
    ],
    init: initramfsInit,
  });
  const cpio = zlib.gunzipSync(gz);
  const member = (name: string) => {
    const r = spawnSync("cpio", ["-i", "--quiet", "--to-stdout", name], { input: cpio });
    assert.equal(r.status, 0, r.stderr.toString());
    return r.stdout.toString();
  };
  assert.equal(member("init"), initramfsInit);
  assert.equal(member(MODULE_LOAD_ORDER), "virtio\nvirtio_blk\n");
  assert.match(initramfsInit, /done <\/lib\/modules\/load-order$/m);
});

test("static ELF detection", async () => {
  assert.equal(isStaticElf(await fs.readFile("/bin/busybox")), true);
  assert.equal(isStaticElf(await fs.readFile(process.execPath)), false);
  assert.equal(isStaticElf(Buffer.from("not an elf")), false);
});

test("LZ4 block decoding handles literals and overlapping matches", () => {
  // "abc", then a match of 9 at offset 3 (overlapping), then a final literal.
  const block = Buffer.from([0x35, 0x61, 0x62, 0x63, 0x03, 0x00, 0x10, 0x21]);
  const out = Buffer.alloc(64);
  const end = decodeLz4Block(block, 0, block.length, out, 0);
  assert.equal(out.toString("latin1", 0, end), "abcabcabcabc!");
  const frame = Buffer.concat([
    Buffer.from([0x02, 0x21, 0x4c, 0x18]),
    Buffer.from([block.length, 0, 0, 0]),
    block,
  ]);
  assert.equal(decodeLz4Legacy(frame).toString("latin1"), "abcabcabcabc!");
  assert.throws(
    () => decodeLz4Block(Buffer.from([0x05, 0x61, 0x09, 0x00]), 0, 4, out, 0),
    /offset out of range/,
  );
});

test("extractVmlinux rejects what is not a bzImage", () => {
  assert.throws(() => extractVmlinux(Buffer.alloc(4096)), /not a bzImage/);
});
