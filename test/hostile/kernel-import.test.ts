// Hostile kernel directories through the real daemon's `kernel.import` (and `image.register`'s
// loose files): FIFOs, devices, sockets, links out of the source dir. Each must fail clearly,
// leave nothing in the kernels dir, and never wedge the daemon's file I/O.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

let daemon: HostileDaemon;
let work: string;
let sockets: net.Server[] = [];
before(async () => {
  daemon = await hostileDaemon();
  work = await fs.mkdtemp(path.join(os.tmpdir(), "hostile-kimport-"));
});
after(async () => {
  for (const s of sockets) s.close();
  await daemon?.close();
  if (work) await fs.rm(work, { recursive: true, force: true });
});

/** Something that is not an ELF file and not empty: discovery takes it as a bzImage. */
const BZIMAGE = Buffer.from("MZ not really a bzImage, but not ELF either\n");

let n = 0;
/** A fresh source dir holding a plausible vmlinuz unless `bare`. */
async function src(bare = false): Promise<string> {
  const dir = path.join(work, `k${n++}`);
  await fs.mkdir(dir);
  if (!bare) await fs.writeFile(path.join(dir, "vmlinuz"), BZIMAGE);
  return dir;
}
const mkfifo = (file: string) => execFileSync("mkfifo", [file]);
async function mksock(file: string): Promise<void> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(file, resolve));
  sockets.push(server);
}

interface Case {
  /** Builds the source; returns the dir to import (or the call to make). */
  setup: () => Promise<string>;
  /** For accepted rows: checks on the installed kernel dir. */
  check?: (kernelDir: string) => Promise<void>;
}

const rows: Array<HostileRow<Case>> = [
  {
    name: "FIFO as vmlinuz",
    input: { setup: async () => ((d) => (mkfifo(`${d}/vmlinuz`), d))(await src(true)) },
    expect: /FIFO.*not a regular file/,
  },
  {
    name: "FIFO as vmlinux",
    input: { setup: async () => ((d) => (mkfifo(`${d}/vmlinux`), d))(await src(true)) },
    expect: /FIFO/,
  },
  {
    name: "FIFO as vmlinuz-<version>",
    input: { setup: async () => ((d) => (mkfifo(`${d}/vmlinuz-6.1.0-9`), d))(await src(true)) },
    expect: /FIFO/,
  },
  {
    name: "FIFO as initrd.img",
    input: { setup: async () => ((d) => (mkfifo(`${d}/initrd.img`), d))(await src()) },
    expect: /initrd .*FIFO/,
  },
  {
    name: "FIFO as config",
    input: { setup: async () => ((d) => (mkfifo(`${d}/config`), d))(await src()) },
    expect: /kernel config .*FIFO/,
  },
  {
    name: "FIFO as metadata.json",
    input: { setup: async () => ((d) => (mkfifo(`${d}/metadata.json`), d))(await src()) },
    expect: /metadata\.json .*FIFO/,
  },
  {
    name: "FIFO named by metadata.json",
    input: {
      setup: async () => {
        const d = await src(true);
        mkfifo(`${d}/k`);
        await fs.writeFile(`${d}/metadata.json`, JSON.stringify({ kernel: "k" }));
        return d;
      },
    },
    expect: /FIFO/,
  },
  {
    name: "socket as vmlinuz",
    input: { setup: async () => ((d) => mksock(`${d}/vmlinuz`).then(() => d))(await src(true)) },
    expect: /socket/,
  },
  {
    name: "directory as vmlinuz",
    input: { setup: async () => ((d) => fs.mkdir(`${d}/vmlinuz`).then(() => d))(await src(true)) },
    expect: /directory, not a regular file/,
  },
  {
    name: "directory as initrd.img",
    input: { setup: async () => ((d) => fs.mkdir(`${d}/initrd.img`).then(() => d))(await src()) },
    expect: /initrd .*directory/,
  },
  {
    name: "empty vmlinuz",
    input: {
      setup: async () => ((d) => fs.writeFile(`${d}/vmlinuz`, "").then(() => d))(await src(true)),
    },
    expect: /is empty/,
  },
  {
    name: "vmlinuz -> /etc/shadow",
    input: {
      setup: async () =>
        ((d) => fs.symlink("/etc/shadow", `${d}/vmlinuz`).then(() => d))(await src(true)),
    },
    expect: /outside/,
  },
  {
    name: "vmlinuz -> /dev/zero",
    input: {
      setup: async () =>
        ((d) => fs.symlink("/dev/zero", `${d}/vmlinuz`).then(() => d))(await src(true)),
    },
    expect: /outside/,
  },
  {
    name: "vmlinuz -> ../ (relative link out of the dir)",
    input: {
      setup: async () => {
        const d = await src(true);
        await fs.writeFile(`${work}/outside-kernel`, BZIMAGE);
        await fs.symlink("../outside-kernel", `${d}/vmlinuz`);
        return d;
      },
    },
    expect: /outside/,
  },
  {
    name: "initrd.img -> /etc/passwd",
    input: {
      setup: async () =>
        ((d) => fs.symlink("/etc/passwd", `${d}/initrd.img`).then(() => d))(await src()),
    },
    expect: /initrd .*outside/,
  },
  {
    name: "vmlinuz is a symlink loop",
    input: {
      setup: async () =>
        ((d) => fs.symlink("vmlinuz", `${d}/vmlinuz`).then(() => d))(await src(true)),
    },
    expect: /loop of symbolic links/,
  },
  {
    name: "vmlinuz is a dangling symlink",
    input: {
      setup: async () => ((d) => fs.symlink("gone", `${d}/vmlinuz`).then(() => d))(await src(true)),
    },
    expect: /does not exist/,
  },
  {
    name: "modules -> /etc",
    input: {
      setup: async () => ((d) => fs.symlink("/etc", `${d}/modules`).then(() => d))(await src()),
    },
    expect: /modules directory .*outside/,
  },
  {
    name: "lib/modules -> a dir outside",
    input: {
      setup: async () => {
        const d = await src();
        await fs.mkdir(`${d}/lib`);
        await fs.mkdir(`${work}/outside-modules`, { recursive: true });
        await fs.symlink(`${work}/outside-modules`, `${d}/lib/modules`);
        return d;
      },
    },
    expect: /outside/,
  },
  {
    name: "lib -> a dir outside (lib/modules through a linked parent)",
    input: {
      setup: async () => {
        const d = await src();
        await fs.mkdir(`${work}/outside-lib/modules`, { recursive: true });
        await fs.symlink("../outside-lib", `${d}/lib`);
        return d;
      },
    },
    expect: /outside/,
  },
  {
    name: "modules is a regular file",
    input: {
      setup: async () => ((d) => fs.writeFile(`${d}/modules`, "x").then(() => d))(await src()),
    },
    expect: /modules .*not a directory/,
  },
  {
    name: "FIFO inside modules",
    input: {
      setup: async () => {
        const d = await src();
        await fs.mkdir(`${d}/modules/kernel`, { recursive: true });
        mkfifo(`${d}/modules/kernel/virtio.ko`);
        return d;
      },
    },
    expect: /FIFO/,
  },
  {
    name: "metadata.json kernel = ../../etc/shadow",
    input: {
      setup: async () => {
        const d = await src(true);
        await fs.writeFile(`${d}/metadata.json`, JSON.stringify({ kernel: "../../etc/shadow" }));
        return d;
      },
    },
    expect: /points outside/,
  },
  {
    name: "metadata.json modules = /etc",
    input: {
      setup: async () => {
        const d = await src();
        await fs.writeFile(`${d}/metadata.json`, JSON.stringify({ modules: "/etc" }));
        return d;
      },
    },
    expect: /points outside/,
  },
  {
    name: "metadata.json is not JSON",
    input: {
      setup: async () =>
        ((d) => fs.writeFile(`${d}/metadata.json`, "{nope").then(() => d))(await src()),
    },
    expect: /not valid JSON/,
  },
  {
    name: "metadata.json kernel is a number",
    input: {
      setup: async () =>
        ((d) => fs.writeFile(`${d}/metadata.json`, '{"kernel": 42}').then(() => d))(await src()),
    },
    expect: /metadata\.json.*kernel/s,
  },
  {
    name: "metadata.json of 2 MiB",
    input: {
      setup: async () => {
        const d = await src();
        await fs.writeFile(`${d}/metadata.json`, `{"x":"${"a".repeat(2 * 1024 * 1024)}"}`);
        return d;
      },
    },
    expect: /more than the 1 MiB/,
  },
  {
    name: "sparse 600 GiB vmlinuz",
    input: {
      setup: async () => {
        const d = await src(true);
        const h = await fs.open(`${d}/vmlinuz`, "w");
        await h.write(BZIMAGE, 0, BZIMAGE.length, 0);
        await h.truncate(600 * 1024 ** 3);
        await h.close();
        return d;
      },
    },
    expect: /more than the 512 MiB/,
  },
  {
    name: "the source dir does not exist",
    input: { setup: async () => `${work}/missing` },
    expect: /does not exist/,
  },
  {
    name: "the source is a file",
    input: { setup: async () => ((d) => `${d}/vmlinuz`)(await src()) },
    expect: /not a directory/,
  },
  {
    name: "the source is a FIFO",
    input: { setup: async () => ((d) => (mkfifo(`${d}/pipe`), `${d}/pipe`))(await src()) },
    expect: /not a directory/,
  },
  {
    name: "a relative source path (the daemon's cwd is not the caller's)",
    input: { setup: async () => "some/relative/dir" },
    expect: /not an absolute path/,
  },
  {
    name: "an empty dir",
    input: { setup: () => src(true) },
    expect: /no kernel found/,
  },
  {
    name: "Debian-style vmlinuz -> vmlinuz-<version> inside the dir (accepted)",
    input: {
      setup: async () => {
        const d = await src(true);
        await fs.writeFile(`${d}/vmlinuz-6.1.0-9-cloud-amd64`, BZIMAGE);
        await fs.symlink("vmlinuz-6.1.0-9-cloud-amd64", `${d}/vmlinuz`);
        await fs.writeFile(`${d}/initrd.img-6.1.0-9-cloud-amd64`, "initrd");
        await fs.symlink("initrd.img-6.1.0-9-cloud-amd64", `${d}/initrd.img`);
        return d;
      },
      check: async (k) => {
        assert.ok((await fs.lstat(`${k}/vmlinuz`)).isFile());
        assert.equal(await fs.readFile(`${k}/initrd.img`, "utf8"), "initrd");
      },
    },
    expect: null,
  },
  {
    name: "modules with links out and in (accepted; links out are not copied)",
    input: {
      setup: async () => {
        const d = await src();
        await fs.mkdir(`${d}/modules/6.1/kernel`, { recursive: true });
        await fs.writeFile(`${d}/modules/6.1/kernel/virtio.ko`, "ko");
        await fs.symlink("/etc/shadow", `${d}/modules/6.1/kernel/shadow.ko`);
        await fs.symlink("/usr/src", `${d}/modules/6.1/build`);
        await fs.symlink("kernel/virtio.ko", `${d}/modules/6.1/alias.ko`);
        return d;
      },
      check: async (k) => {
        await assert.rejects(fs.lstat(`${k}/modules/6.1/kernel/shadow.ko`), /ENOENT/);
        await assert.rejects(fs.lstat(`${k}/modules/6.1/build`), /ENOENT/);
        assert.equal(await fs.readlink(`${k}/modules/6.1/alias.ko`), "kernel/virtio.ko");
        assert.equal(await fs.readFile(`${k}/modules/6.1/alias.ko`, "utf8"), "ko");
      },
    },
    expect: null,
  },
  {
    name: "the source dir is itself a symlink (accepted: the user named it)",
    input: {
      setup: async () => {
        const d = await src();
        await fs.symlink(d, `${d}-link`);
        return `${d}-link`;
      },
    },
    expect: null,
  },
];

/** Imports with a bound: a FIFO that blocks the daemon must fail the row, not the suite. */
async function importDir(name: string, from: string, ms = 15_000): Promise<unknown> {
  const client = await daemon.connect();
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      client.call("kernel.import", { name, from }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`kernel.import hung for ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

test("kernel import: hostile source directories", async (t) => {
  t.diagnostic(`${rows.length} hostile inputs`);
  let i = 0;
  await runTable(
    rows,
    async (input) => {
      const name = `hostile-${i++}`;
      const from = await input.setup();
      await importDir(name, from);
      // Accepted: look at what was installed, then remove it so the row leaves nothing.
      const client = await daemon.connect();
      try {
        const detail = await client.call("kernel.show", { name });
        await input.check?.(detail.dir);
        await client.call("kernel.delete", { name });
      } finally {
        client.close();
      }
    },
    { daemon, roots: [daemon.home.home] },
  );
});

test("kernel import: five FIFOs at once do not wedge the daemon's file I/O", async () => {
  const dirs: string[] = [];
  for (let k = 0; k < 5; k++) {
    const d = await src(true);
    mkfifo(`${d}/vmlinuz`);
    dirs.push(d);
  }
  const results = await Promise.allSettled(dirs.map((d, k) => importDir(`fifo-${k}`, d)));
  for (const r of results) {
    assert.equal(r.status, "rejected");
    assert.match((r as PromiseRejectedResult).reason.message, /FIFO/);
  }
  // File I/O (the libuv pool) still answers: a good import completes within seconds.
  const good = await src();
  await importDir("after-fifos", good, 10_000); // rejects if the import hangs
  const client = await daemon.connect();
  await client.call("kernel.delete", { name: "after-fifos" });
  client.close();
});

test("image register: loose kernel files must be regular files", async () => {
  const rootfs = path.join(work, "rootfs.ext4");
  execFileSync("truncate", ["-s", "8M", rootfs]);
  execFileSync("mkfs.ext4", ["-q", "-F", rootfs]);
  const fifo = path.join(work, "reg-fifo");
  mkfifo(fifo);
  type Loose = { kernel: string; initrd?: string; modules?: string };
  const register = async (extra: Loose) => {
    const client = await daemon.connect();
    try {
      return await client.call("image.register", { name: "reg", rootfs, ...extra });
    } finally {
      client.close();
    }
  };
  await runTable<Loose>(
    [
      { name: "register --kernel FIFO", input: { kernel: fifo }, expect: /FIFO/ },
      {
        name: "register --kernel /dev/zero",
        input: { kernel: "/dev/zero" },
        expect: /character device/,
      },
      { name: "register --kernel <dir>", input: { kernel: work }, expect: /directory/ },
      {
        name: "register --initrd FIFO",
        input: { kernel: `${await src()}/vmlinuz`, initrd: fifo },
        expect: /initrd .*FIFO/,
      },
      {
        name: "register --kernel relative",
        input: { kernel: "vmlinuz" },
        expect: /--kernel "vmlinuz" is not an absolute path/,
      },
      {
        name: "register --modules /etc/passwd (a file)",
        input: { kernel: `${await src()}/vmlinuz`, modules: "/etc/passwd" },
        expect: /not a directory/,
      },
    ],
    (input) => register(input),
    { daemon, roots: [daemon.home.home] },
  );
});
