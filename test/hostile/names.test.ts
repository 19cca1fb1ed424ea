// Hostile names through the real daemon: VM names (vm.create, vm.show), kernel names
// (kernel.import, kernel.show), image names (image.register, image.show) and snapshot names
// (vm.snapshot, snapshot.show, snapshot.delete, vm.create fromSnapshot). A name is never a
// path, never reaches a terminal raw (control characters come back escaped), and a refused
// name leaves nothing behind.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import type { DaemonClient } from "../../src/cli/client.js";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

let daemon: HostileDaemon;
let work: string;
let kernelDir: string;
let rootfs: string;
before(async () => {
  daemon = await hostileDaemon();
  work = await fs.mkdtemp(path.join(os.tmpdir(), "hostile-names-"));
  kernelDir = path.join(work, "kernel");
  await fs.mkdir(kernelDir);
  await fs.writeFile(path.join(kernelDir, "vmlinuz"), "MZ not ELF\n");
  rootfs = path.join(work, "rootfs.ext4");
  execFileSync("truncate", ["-s", "8M", rootfs]);
  execFileSync("mkfs.ext4", ["-q", "-F", rootfs]);
});
after(async () => {
  await daemon?.close();
  if (work) await fs.rm(work, { recursive: true, force: true });
});

type Call = (c: DaemonClient) => Promise<unknown>;

async function attempt(call: Call): Promise<void> {
  const client = await daemon.connect();
  try {
    await call(client);
  } catch (err) {
    // Whatever the name held, the message that reaches a terminal holds no control characters.
    const text = `${(err as Error).message}\n${(err as { hint?: string }).hint ?? ""}`;
    assert.doesNotMatch(
      text.trimEnd(),
      /[\u0000-\u0009\u000b-\u001f\u007f]/,
      "raw control character",
    );
    throw err;
  } finally {
    client.close();
  }
}

const HOSTILE_NAMES: Array<[string, string]> = [
  ["..", ".."],
  [".", "."],
  ["/", "/"],
  ["a/b", "a/b"],
  ["../etc", "../etc"],
  ["an absolute path", "/etc/passwd"],
  ["a double quote", 'a"b'],
  ["a single quote", "a'b"],
  ["a newline", "a\nb"],
  ["ESC (terminal escape)", "\u001b[2Jx"],
  ["a NUL byte", "a\u0000b"],
  ["300 characters", "a".repeat(300)],
  ["unicode", "ünïcødé"],
  ["a leading dash", "-rf"],
  ["upper case", "WEB"],
  ["a space", "a b"],
  ["shell substitution", "$(id)"],
  ["a glob", "*"],
];

const notFound = /no such image|no image named "no-such-image"/;
const rows: Array<HostileRow<Call>> = [
  // VM names at create: refused by the name rule before anything is made.
  ...HOSTILE_NAMES.map(([label, name]): HostileRow<Call> => ({
    name: `vm.create name: ${label}`,
    input: (c) => c.call("vm.create", { name, image: "no-such-image", start: false }),
    expect: /invalid VM name .*\n.*DNS label/s,
  })),
  {
    name: "vm.create name: empty",
    input: (c) => c.call("vm.create", { name: "", image: "no-such-image", start: false }),
    expect: /invalid VM name ""/,
  },
  {
    name: "vm.create name: a trailing dash",
    input: (c) => c.call("vm.create", { name: "web-", image: "no-such-image", start: false }),
    expect: /invalid VM name/,
  },
  {
    name: "vm.create name: 64 characters (one past a DNS label)",
    input: (c) =>
      c.call("vm.create", { name: "a".repeat(64), image: "no-such-image", start: false }),
    expect: /invalid VM name/,
  },
  {
    name: "vm.create name: a dot (would be a subdomain of .vm)",
    input: (c) => c.call("vm.create", { name: "a.b", image: "no-such-image", start: false }),
    expect: /invalid VM name/,
  },
  {
    name: "vm.create name: 63 characters is fine (then the missing image stops it)",
    input: (c) =>
      c.call("vm.create", { name: "a".repeat(63), image: "no-such-image", start: false }),
    expect: notFound,
  },
  // VM names at lookup: not found, and escaped.
  ...HOSTILE_NAMES.map(([label, name]): HostileRow<Call> => ({
    name: `vm.show name: ${label}`,
    input: (c) => c.call("vm.show", { name }),
    expect: /no VM named "/,
  })),
  // Kernel names at import.
  ...HOSTILE_NAMES.map(([label, name]): HostileRow<Call> => ({
    name: `kernel.import name: ${label}`,
    input: (c) => c.call("kernel.import", { name, from: kernelDir }),
    expect: /invalid kernel name/,
  })),
  {
    name: "kernel.import name: empty",
    input: (c) => c.call("kernel.import", { name: "", from: kernelDir }),
    expect: /invalid parameters.*name/s,
  },
  {
    name: "kernel.show name: ../..",
    input: (c) => c.call("kernel.show", { name: "../.." }),
    expect: /no kernel named "\.\.\/\.\."/,
  },
  {
    name: "kernel.delete name: ESC",
    input: (c) => c.call("kernel.delete", { name: "\u001b]0;x\u0007" }),
    expect: /no kernel named "\\u001b\]0;x\\u0007"/,
  },
  // Image names at register (the loose-kernel form would derive a kernel name from it).
  ...HOSTILE_NAMES.map(([label, name]): HostileRow<Call> => ({
    name: `image.register name: ${label}`,
    input: (c) => c.call("image.register", { name, rootfs, kernelRef: "nope" }),
    expect: /invalid image name/,
  })),
  {
    name: "image.register name: fine, then the missing kernel stops it",
    input: (c) => c.call("image.register", { name: "ok-image", rootfs, kernelRef: "nope" }),
    expect: /no kernel named "nope"/,
  },
  {
    name: "image.register with loose files: a hostile name is refused before a kernel is made",
    input: (c) =>
      c.call("image.register", {
        name: "../x",
        rootfs,
        kernel: path.join(kernelDir, "vmlinuz"),
      }),
    expect: /invalid image name/,
  },
  {
    name: "image.show name: a newline",
    input: (c) => c.call("image.show", { name: "a\nb" }),
    expect: /no image named "a\\nb"/,
  },
  // Snapshot names: refused by the VM-name rule when made, not found (escaped) when looked up.
  ...HOSTILE_NAMES.map(([label, name]): HostileRow<Call> => ({
    name: `vm.snapshot snapshot name: ${label}`,
    input: (c) => c.call("vm.snapshot", { name: "ghost", snapshot: name }),
    expect: /invalid snapshot name .*\n.*DNS label/s,
  })),
  ...HOSTILE_NAMES.map(([label, name]): HostileRow<Call> => ({
    name: `snapshot.show name: ${label}`,
    input: (c) => c.call("snapshot.show", { name }),
    expect: /no snapshot named "/,
  })),
  ...HOSTILE_NAMES.map(([label, name]): HostileRow<Call> => ({
    name: `vm.create fromSnapshot: ${label}`,
    input: (c) => c.call("vm.create", { fromSnapshot: name, start: false }),
    expect: /no snapshot named "/,
  })),
  {
    name: "snapshot.delete name: ESC",
    input: (c) => c.call("snapshot.delete", { name: "\u001b]0;x\u0007" }),
    expect: /no snapshot named "\\u001b\]0;x\\u0007"/,
  },
];

test("names: hostile VM, kernel, image and snapshot names", async (t) => {
  t.diagnostic(`${rows.length} hostile inputs`);
  await runTable(rows, attempt, {
    daemon,
    roots: [daemon.home.home],
  });
});
