// Hostile config files through the real CLI (`banger doctor` reads the config synchronously)
// and the real daemon (`vm.create` loads it asynchronously): absurd numbers, wrong types, devices
// banger does not own, public subnets, and paths that are not regular files. Each must fail
// quickly (a hang fails the row) with a message naming the file.
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

const BIN = path.resolve(import.meta.dirname, "../../bin/banger");
let daemon: HostileDaemon;
let configFile: string;
before(async () => {
  daemon = await hostileDaemon();
  configFile = daemon.home.layout.configFile;
  await fs.mkdir(path.dirname(configFile), { recursive: true });
});
after(async () => {
  await daemon?.close();
});

/** Text of the config file, or how to make something else at its path. */
type Case = string | Buffer | { make: (file: string) => Promise<void> };

/** What `banger doctor` says about the config: the "vm defaults" line. Bounded: a hang fails. */
function doctorSays(): Promise<{ ok: boolean; line: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, "doctor"],
      { env: daemon.env, timeout: 20_000, maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        if (err && (err as { killed?: boolean }).killed)
          return reject(new Error(`banger doctor hung (killed after 20 s)`));
        const line = `${stdout}${stderr}`.split("\n").find((l) => /vm defaults/.test(l));
        if (!line)
          return reject(
            new Error(`banger doctor printed no vm defaults line:\n${stdout}${stderr}`),
          );
        resolve({ ok: !line.includes("✗"), line });
      },
    );
  });
}

/** The daemon's asynchronous load, through vm.create (which reads the config first). */
async function daemonSays(): Promise<void> {
  const client = await daemon.connect();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      client.call("vm.create", { name: "cfgprobe", image: "no-such-image", start: false }),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("vm.create hung for 15 s")), 15_000);
      }),
    ]);
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

async function attempt(input: Case, row: HostileRow<Case>): Promise<void> {
  if (typeof input === "string" || Buffer.isBuffer(input)) await fs.writeFile(configFile, input);
  else await input.make(configFile);
  try {
    const said = await doctorSays();
    if (row.expect === null) {
      assert.ok(said.ok, `${row.name}: doctor refused: ${said.line}`);
      return;
    }
    assert.ok(!said.ok, `${row.name}: doctor accepted it: ${said.line}`);
    assert.match(said.line, row.expect, `${row.name}: doctor's line`);
    assert.ok(said.line.includes(configFile), `${row.name}: doctor's line names no file`);
    // The daemon must refuse it too, with the same clear reason (the row's error).
    await daemonSays();
  } finally {
    await fs.rm(configFile, { recursive: true, force: true });
  }
}

const MiB20 = "x".repeat(2 * 1024 * 1024);
const vm = (body: string) => `[vm_defaults]\n${body}\n`;
const netw = (body: string) => `[network]\n${body}\n`;
const timeouts = (body: string) => `[timeouts]\n${body}\n`;

const rows: Array<HostileRow<Case>> = [
  // Numbers the host cannot do.
  { name: "memory = 2^53-1 (MiB)", input: vm("memory = 9007199254740991"), expect: /too large/ },
  {
    name: 'memory = "9007199254740991G"',
    input: vm('memory = "9007199254740991G"'),
    expect: /too large/,
  },
  { name: 'memory = "100T"', input: vm('memory = "100T"'), expect: /more than this host's memory/ },
  { name: "memory = -1", input: vm("memory = -1"), expect: /must be a positive size/ },
  { name: "memory = 0", input: vm("memory = 0"), expect: /must be a positive size/ },
  { name: "memory = 1.5", input: vm("memory = 1.5"), expect: /must be a positive size/ },
  { name: 'memory = "1M"', input: vm('memory = "1M"'), expect: /below the floor of 256 MiB/ },
  { name: "memory = true", input: vm("memory = true"), expect: /expected a size/ },
  { name: 'memory = ""', input: vm('memory = ""'), expect: /invalid size/ },
  { name: 'memory = "-2G"', input: vm('memory = "-2G"'), expect: /negative/ },
  {
    name: "vcpu = 1000",
    input: vm("vcpu = 1000"),
    expect: /vcpu: 1000 must be a whole number from 1 to/,
  },
  { name: "vcpu = -1", input: vm("vcpu = -1"), expect: /vcpu: -1 must be/ },
  { name: "vcpu = 2.5", input: vm("vcpu = 2.5"), expect: /vcpu: 2\.5 must be/ },
  { name: 'vcpu = "4"', input: vm('vcpu = "4"'), expect: /vcpu: "4" must be a whole number/ },
  { name: "vcpu = inf", input: vm("vcpu = inf"), expect: /vcpu: .* must be a whole number/ },
  { name: "vcpu = nan", input: vm("vcpu = nan"), expect: /vcpu: .* must be a whole number/ },
  {
    name: 'disk_size = "17T"',
    input: vm('disk_size = "17T"'),
    expect: /more than the limit of 16 TiB/,
  },
  { name: 'disk_size = "1M"', input: vm('disk_size = "1M"'), expect: /below the floor of 64 MiB/ },
  {
    name: "dns_port = 0",
    input: netw("dns_port = 0"),
    expect: /dns_port: 0 must be a port number/,
  },
  {
    name: "dns_port = 70000",
    input: netw("dns_port = 70000"),
    expect: /port number from 1 to 65535/,
  },
  {
    name: "tap_pool_size = 100000",
    input: netw("tap_pool_size = 100000"),
    expect: /tap_pool_size/,
  },
  // Devices banger does not own, and bridge names that are not names.
  {
    name: 'bridge = "eth0"',
    input: netw('bridge = "eth0"'),
    expect: /"eth0" does not start with "banger": banger only manages its own devices/,
  },
  { name: 'bridge = "lo"', input: netw('bridge = "lo"'), expect: /does not start with "banger"/ },
  {
    name: 'bridge = "docker0"',
    input: netw('bridge = "docker0"'),
    expect: /does not start with "banger"/,
  },
  {
    name: "bridge with a shell command",
    input: netw('bridge = "banger0; rm -rf /"'),
    expect: /not a valid interface name/,
  },
  {
    name: "bridge of 16 characters",
    input: netw('bridge = "banger0123456789"'),
    expect: /not a valid interface name/,
  },
  {
    name: "bridge with a slash",
    input: netw('bridge = "banger/x"'),
    expect: /not a valid interface name/,
  },
  {
    name: "bridge with a newline",
    input: netw('bridge = "banger\\nx"'),
    expect: /not a valid interface name/,
  },
  { name: "empty bridge", input: netw('bridge = ""'), expect: /must not be empty/ },
  { name: "bridge = 0", input: netw("bridge = 0"), expect: /expected a string/ },
  // Subnets that are not private.
  {
    name: "public subnet 8.8.8.0/24",
    input: netw('subnet = "8.8.8.0/24"'),
    expect: /not a private range/,
  },
  {
    name: "172.32.0.0/24 (just past 172.16/12)",
    input: netw('subnet = "172.32.0.0/24"'),
    expect: /not a private range/,
  },
  {
    name: "CGNAT 100.64.0.0/24",
    input: netw('subnet = "100.64.0.0/24"'),
    expect: /not a private range/,
  },
  {
    name: "loopback 127.0.0.0/24",
    input: netw('subnet = "127.0.0.0/24"'),
    expect: /not a private range/,
  },
  {
    name: "host bits set",
    input: netw('subnet = "172.30.0.5/24"'),
    expect: /host bits set; did you mean 172\.30\.0\.0\/24/,
  },
  { name: "octet over 255", input: netw('subnet = "10.999.0.0/24"'), expect: /not an IPv4 CIDR/ },
  // Shapes and keys.
  { name: "unknown top-level key", input: "colour = 1\n", expect: /unknown key/ },
  {
    name: "unknown nested table",
    input: "[network.extra]\na = 1\n",
    expect: /network\.extra: unknown key/,
  },
  { name: "invalid TOML", input: "[network\n", expect: /invalid TOML/ },
  {
    name: "10k-deep inline tables",
    input: `x = ${"{a = ".repeat(10_000)}1${"}".repeat(10_000)}\n`,
    expect: /invalid TOML/,
  },
  {
    name: "100k-deep arrays",
    input: `x = ${"[".repeat(100_000)}${"]".repeat(100_000)}\n`,
    expect: /invalid TOML/,
  },
  {
    name: "5000-deep dotted table",
    input: `[${Array(5000).fill("a").join(".")}]\nb = 1\n`,
    expect: /unknown key/,
  },
  { name: "NUL bytes", input: Buffer.from('vmm = "qemu"\0\0\n'), expect: /invalid TOML/ },
  {
    name: "invalid UTF-8",
    input: Buffer.from([0x76, 0x6d, 0x6d, 0x20, 0x3d, 0x20, 0x22, 0xff, 0x22, 0x0a]),
    expect: /not valid UTF-8/,
  },
  { name: "a 2 MiB file", input: `# ${MiB20}\n`, expect: /more than the 1 MiB banger reads/ },
  {
    name: "relative helper_socket",
    input: netw('helper_socket = "x.sock"'),
    expect: /absolute path/,
  },
  {
    name: "file_sync guest outside /root",
    input: '[[file_sync]]\nhost = "~/.x"\nguest = "/etc/shadow"\n',
    expect: /guest path must be under/,
  },
  {
    name: "file_sync with ..",
    input: '[[file_sync]]\nhost = "~/../../etc/shadow"\nguest = "~/x"\n',
    expect: /must not contain '\.\.'/,
  },
  // Paths that are not regular files.
  {
    name: "the config path is a FIFO",
    input: { make: async (f) => void execFileSync("mkfifo", [f]) },
    expect: /is a FIFO \(named pipe\), not a regular file/,
  },
  {
    name: "a symlink to a FIFO",
    input: {
      make: async (f) => {
        execFileSync("mkfifo", [`${f}.fifo`]);
        await fs.symlink(`${f}.fifo`, f);
      },
    },
    expect: /FIFO/,
  },
  {
    name: "a directory",
    input: { make: (f) => fs.mkdir(f) },
    expect: /is a directory, not a regular file/,
  },
  {
    name: "a symlink to /dev/zero",
    input: { make: (f) => fs.symlink("/dev/zero", f) },
    expect: /character device/,
  },
  {
    name: "a symlink to /dev/null",
    input: { make: (f) => fs.symlink("/dev/null", f) },
    expect: /character device/,
  },
  {
    name: "a unix socket",
    input: {
      make: async (f) => {
        const server = net.createServer();
        await new Promise<void>((resolve) => server.listen(f, resolve));
        server.close(); // the socket file stays
      },
    },
    expect: /socket/,
  },
  {
    name: "a dangling symlink",
    input: { make: (f) => fs.symlink(`${f}.gone`, f) },
    expect: /ENOENT|does not exist/,
  },
  { name: "a symlink loop", input: { make: (f) => fs.symlink(f, f) }, expect: /ELOOP|loop/ },
  // Accepted.
  { name: "an empty file", input: "", expect: null },
  {
    name: "a symlink to a regular file",
    input: {
      make: async (f) => {
        await fs.writeFile(`${f}.real`, 'vmm = "qemu"\n');
        await fs.symlink(`${f}.real`, f);
      },
    },
    expect: null,
  },
  // [timeouts]: a wait of zero, forever, or not a number must not reach a timer.
  { name: "ssh_wait = 0", input: timeouts("ssh_wait = 0"), expect: /ssh_wait: 0 must be from 1s/ },
  { name: "ssh_wait = -5", input: timeouts("ssh_wait = -5"), expect: /ssh_wait: -5 must be/ },
  {
    name: "ssh_wait = 2^63-1",
    input: timeouts("ssh_wait = 9223372036854775807"),
    expect: /invalid TOML/,
  },
  {
    name: "ssh_wait = inf",
    input: timeouts("ssh_wait = inf"),
    expect: /ssh_wait: Infinity must be/,
  },
  { name: "ssh_wait = nan", input: timeouts("ssh_wait = nan"), expect: /ssh_wait: NaN must be/ },
  { name: 'stop = "1e9s"', input: timeouts('stop = "1e9s"'), expect: /stop: "1e9s" must be/ },
  {
    name: 'stop = "99999999m"',
    input: timeouts('stop = "99999999m"'),
    expect: /stop: "99999999m" must be/,
  },
  { name: 'stop = " 5s"', input: timeouts('stop = " 5s"'), expect: /stop: " 5s" must be/ },
  { name: "stop = [5]", input: timeouts("stop = [5]"), expect: /stop: \[5\] must be/ },
  {
    name: "unknown timeouts key",
    input: timeouts("boot = 3"),
    expect: /timeouts\.boot: unknown key/,
  },
  { name: "good timeouts", input: timeouts('ssh_wait = "2m"\nstop = 5'), expect: null },
  {
    name: "a good bridge and subnet",
    input: netw('bridge = "banger7"\nsubnet = "192.168.77.0/24"'),
    expect: null,
  },
];

test("config: hostile config files", async (t) => {
  t.diagnostic(`${rows.length} hostile inputs`);
  await runTable(
    rows,
    async (input, row) => {
      try {
        await attempt(input, row);
      } finally {
        // What a row's make() put beside the config path.
        for (const extra of [".fifo", ".real"])
          await fs.rm(`${configFile}${extra}`, { force: true });
      }
    },
    { daemon, roots: [daemon.home.home] },
  );
});

test("config: --vcpu and --memory flags get the same bounds", async () => {
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      execFile(
        process.execPath,
        [BIN, ...args],
        { env: daemon.env, timeout: 20_000 },
        (err, stdout, stderr) =>
          resolve({
            code: (err as { code?: number } | null)?.code ?? 0,
            out: `${stdout}${stderr}`,
          }),
      );
    });
  for (const [args, expect] of [
    [["vm", "create", "--vcpu", "1000", "--no-start"], /invalid --vcpu "1000".*from 1 to/s],
    [["vm", "create", "--vcpu", "0x4", "--no-start"], /invalid --vcpu/],
    [["vm", "create", "--memory", "100T", "--no-start"], /more than this host's memory/],
    [["vm", "create", "--memory", "9007199254740991", "--no-start"], /too large/],
    [["vm", "create", "--disk-size", "20T", "--no-start"], /more than the limit of 16 TiB/],
    [["vm", "set", "x", "--vcpu", "1000"], /invalid --vcpu/],
  ] as const) {
    const { code, out } = await run([...args]);
    assert.notEqual(code, 0, `${args.join(" ")} succeeded`);
    assert.match(out, expect, args.join(" "));
    assert.doesNotMatch(out, /bug in banger|internal error/i);
  }
  // And the daemon checks on its own, whatever the caller.
  const client = await daemon.connect();
  try {
    await assert.rejects(
      client.call("vm.create", {
        name: "big",
        image: "no-such-image",
        memoryBytes: 2 ** 52,
        start: false,
      }),
      /more than this host's memory/,
    );
    await assert.rejects(
      client.call("vm.create", { name: "big", image: "no-such-image", vcpu: 1000, start: false }),
      /vcpu: 1000 vCPUs is more than/,
    );
  } finally {
    client.close();
  }
  await daemon.assertAlive();
});
