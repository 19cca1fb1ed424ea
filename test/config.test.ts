import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { defaultConfig, loadConfig, parseConfig } from "../src/config/config.js";

const SRC = "/home/you/.config/banger/config.toml";
const GiB = 1024 ** 3;

test("a missing config file means defaults", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-cfg-"));
  try {
    assert.deepEqual(await loadConfig(path.join(dir, "config.toml")), defaultConfig());
  } finally {
    await fs.rm(dir, { recursive: true });
  }
});

test("a full config parses", () => {
  const config = parseConfig(
    `
default_image_name = "alpine"
vmm = "qemu"
accel = "tcg"

[vm_defaults]
vcpu = 2
memory = "2G"
disk_size = 10240

[network]
bridge = "banger1"
subnet = "172.31.0.0/24"
dns_port = 5353
tap_pool_size = 0
helper_socket = "/run/bh/me.sock"

[[file_sync]]
host = "~/.gitconfig"
guest = "~/.gitconfig"

[[file_sync]]
host = "/etc/npmrc"
guest = "/root/.npmrc"
mode = "0644"
`,
    SRC,
  );
  assert.equal(config.defaultImageName, "alpine");
  assert.equal(config.vmm, "qemu");
  assert.equal(config.accel, "tcg");
  assert.deepEqual(config.vmDefaults, { vcpu: 2, memoryBytes: 2 * GiB, diskBytes: 10 * GiB });
  assert.deepEqual(config.network, {
    bridge: "banger1",
    subnet: "172.31.0.0/24",
    dnsPort: 5353,
    tapPoolSize: 0,
    helperSocket: "/run/bh/me.sock",
  });
  assert.deepEqual(config.fileSync, [
    { host: "~/.gitconfig", guest: "~/.gitconfig", mode: null },
    { host: "/etc/npmrc", guest: "/root/.npmrc", mode: 0o644 },
  ]);
});

const sync = (fields: string) =>
  `[[file_sync]]\nhost = "~/a"\nguest = "~/a"\n[[file_sync]]\n${fields}\n`;

const invalid: Array<[string, string, RegExp]> = [
  [
    "unknown top-level key with a hint",
    `defualt_image_name = "x"`,
    /defualt_image_name: unknown key \(did you mean "default_image_name"\?\)/,
  ],
  [
    "unknown table key with a hint",
    `[vm_defaults]\nmemroy = "2G"`,
    /vm_defaults\.memroy: unknown key \(did you mean "vm_defaults\.memory"\?\)/,
  ],
  [
    "unknown key with nothing close",
    `colour = "red"`,
    /colour: unknown key; known keys: default_image_name/,
  ],
  ["bad vmm", `vmm = "kvm"`, /vmm: "kvm" must be one of: auto, qemu, firecracker/],
  ["bad accel", `accel = "hvf"`, /accel: "hvf" must be one of: auto, kvm, tcg/],
  ["wrong type", `default_image_name = 3`, /default_image_name: expected a string, got 3/],
  ["empty image name", `default_image_name = ""`, /default_image_name: must not be empty/],
  [
    "vcpu zero",
    `[vm_defaults]\nvcpu = 0`,
    /vm_defaults\.vcpu: 0 must be a whole number from 1 to \d+ \(2x this host's \d+ CPUs, at most 64\)/,
  ],
  ["garbage memory", `[vm_defaults]\nmemory = "lots"`, /vm_defaults\.memory: invalid size "lots"/],
  [
    "bad bridge",
    `[network]\nbridge = "banger-long-bridge-name"`,
    /network\.bridge: .* is not a valid interface name/,
  ],
  [
    "bad subnet",
    `[network]\nsubnet = "10.0.0.0"`,
    /network\.subnet: "10\.0\.0\.0" is not an IPv4 CIDR/,
  ],
  ["subnet prefix", `[network]\nsubnet = "10.0.0.0/8"`, /prefix \/8 must be between \/16 and \/29/],
  ["bad port", `[network]\ndns_port = 70000`, /network\.dns_port: 70000 must be a port number/],
  [
    "negative pool",
    `[network]\ntap_pool_size = -1`,
    /network\.tap_pool_size: -1 must be a whole number from 0 \(no pool\) to 64/,
  ],
  [
    "fractional pool",
    `[network]\ntap_pool_size = 1.5`,
    /network\.tap_pool_size: 1\.5 must be a whole number/,
  ],
  [
    "relative helper socket",
    `[network]\nhelper_socket = "helper.sock"`,
    /network\.helper_socket: "helper\.sock" must be an absolute path/,
  ],
  ["file_sync not an array", `file_sync = "x"`, /file_sync: must be an array of tables/],
  [
    "relative host",
    sync(`host = "foo"\nguest = "~/foo"`),
    /file_sync\[1\]\.host "foo": host path must start with ~\/ or \//,
  ],
  [
    "guest outside root",
    sync(`host = "~/x"\nguest = "/etc/x"`),
    /file_sync\[1\]\.guest "\/etc\/x": guest path must be under ~\/ or \/root\//,
  ],
  [
    "relative guest",
    sync(`host = "~/x"\nguest = "x"`),
    /file_sync\[1\]\.guest "x": guest path must be under/,
  ],
  ["empty host", sync(`host = ""\nguest = "~/x"`), /file_sync\[1\]\.host: must not be empty/],
  [
    "dotdot",
    sync(`host = "~/a/../b"\nguest = "~/x"`),
    /file_sync\[1\]\.host "~\/a\/\.\.\/b": must not contain '\.\.'/,
  ],
  [
    "dotdot guest",
    sync(`host = "~/a"\nguest = "/root/../etc"`),
    /file_sync\[1\]\.guest .*must not contain '\.\.'/,
  ],
  [
    "tilde user",
    sync(`host = "~bob/x"\nguest = "~/x"`),
    /file_sync\[1\]\.host "~bob\/x": ~user\/ paths are not supported/,
  ],
  [
    "bad mode",
    sync(`host = "~/x"\nguest = "~/x"\nmode = "0999"`),
    /file_sync\[1\]\.mode: "0999" must be an octal string/,
  ],
  [
    "numeric mode",
    sync(`host = "~/x"\nguest = "~/x"\nmode = 600`),
    /file_sync\[1\]\.mode: 600 must be an octal string/,
  ],
  ["missing guest", sync(`host = "~/x"`), /file_sync\[1\]: missing guest/],
  [
    "unknown entry key",
    sync(`host = "~/x"\nguest = "~/x"\nowner = "me"`),
    /file_sync\[1\]\.owner: unknown key/,
  ],
];

for (const [name, text, pattern] of invalid) {
  test(`config error: ${name}`, () => {
    assert.throws(
      () => parseConfig(text, SRC),
      (err: unknown) => {
        assert.ok(err instanceof BangerError, String(err));
        assert.equal(err.code, ErrorCode.InvalidParams);
        assert.match(err.message, pattern);
        assert.ok(err.message.startsWith(`${SRC}: `), err.message);
        assert.match(err.hint ?? "", /edit .*config\.toml/);
        return true;
      },
    );
  });
}

test("TOML syntax errors name the file and line", () => {
  assert.throws(
    () => parseConfig(`vmm = "qemu"\n[vm_defaults\n`, SRC),
    (err: unknown) =>
      err instanceof BangerError && /config\.toml: line 2: invalid TOML/.test(err.message),
  );
});

test("[image] bounds parse, default to sizes for real images, and refuse nonsense", () => {
  const defaults = defaultConfig().image;
  assert.deepEqual(defaults, {
    maxLayerBytes: 16 * GiB,
    maxImageBytes: 48 * GiB,
    maxEntries: 2_000_000,
  });
  const config = parseConfig(
    `[image]\nmax_layer_size = "2G"\nmax_image_size = 512\nmax_entries = 1000\n`,
    SRC,
  );
  assert.deepEqual(config.image, {
    maxLayerBytes: 2 * GiB,
    maxImageBytes: 512 * 1024 * 1024,
    maxEntries: 1000,
  });
  for (const [text, pattern] of [
    [`[image]\nmax_entries = 0`, /image\.max_entries: 0 must be a whole number/],
    [`[image]\nmax_entries = 1.5`, /image\.max_entries/],
    [`[image]\nmax_image_size = "-1G"`, /image\.max_image_size.*negative/],
    [`[image]\nmax_layer_size = "lots"`, /image\.max_layer_size/],
    [
      `[image]\nmax_layers = 3`,
      /image\.max_layers: unknown key \(did you mean "image\.max_layer_size"\?\)|image\.max_layers: unknown key/,
    ],
    [`image = 3`, /image: must be a table/],
  ] as const) {
    assert.throws(
      () => parseConfig(text, SRC),
      (err: unknown) => err instanceof BangerError && pattern.test(err.message),
      text,
    );
  }
});

test("[timeouts] take seconds or 90s / 2m, default to 90 s and 30 s, and refuse nonsense", () => {
  assert.deepEqual(defaultConfig().timeouts, { sshWaitMs: 90_000, stopMs: 30_000 });
  assert.deepEqual(parseConfig(`[timeouts]\nssh_wait = "2m"\nstop = 5\n`, SRC).timeouts, {
    sshWaitMs: 120_000,
    stopMs: 5_000,
  });
  assert.equal(parseConfig(`[timeouts]\nstop = "7s"\n`, SRC).timeouts.stopMs, 7_000);
  for (const [text, pattern] of [
    [`[timeouts]\nssh_wait = 0`, /timeouts\.ssh_wait: 0 must be from 1s to 60m/],
    [`[timeouts]\nssh_wait = "61m"`, /timeouts\.ssh_wait: "61m" must be/],
    [`[timeouts]\nstop = 1.5`, /timeouts\.stop: 1\.5 must be/],
    [`[timeouts]\nstop = "soon"`, /timeouts\.stop: "soon" must be/],
    [`[timeouts]\nstop = "10h"`, /timeouts\.stop/],
    [`[timeouts]\nboot = 3`, /timeouts\.boot: unknown key/],
    [`timeouts = 3`, /timeouts: must be a table/],
  ] as const) {
    assert.throws(
      () => parseConfig(text, SRC),
      (err: unknown) => err instanceof BangerError && pattern.test(err.message),
      text,
    );
  }
});
