// Hostile image configs (Env, WorkingDir, Entrypoint, ...) through the daemon's image.pull RPC,
// from the real docker-registry on 127.0.0.1. A malformed field or one past the bounds refuses
// the image; an entry banger cannot apply literally is dropped and named. Every row: the daemon
// alive and nothing left in its home; an accepted row's kept config is checked as well.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import type { ImageConfig } from "../../src/api/methods.js";
import type { DaemonClient } from "../../src/cli/client.js";
import { bangerBin } from "../helpers/cli.js";
import { makeLayer } from "../helpers/layer.js";
import { pushImage, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

const run = promisify(execFile);
let daemon: HostileDaemon;
let registry: TestRegistry;
let layer: Buffer;

before(async () => {
  registry = await startRegistry();
  daemon = await hostileDaemon();
  layer = await makeLayer([{ name: "etc/os-release", body: "ID=cfg\n" }]);
});
after(async () => {
  await daemon?.close();
  await registry?.stop();
});

interface Input {
  /** The config's `config` object (or anything in its place). */
  config: unknown;
  /** For accepted rows: what must be kept. */
  check?: (c: ImageConfig) => void;
}

const kept = (env: string[], warning: RegExp) => (c: ImageConfig) => {
  assert.deepEqual(c.env, env);
  assert.ok(
    c.warnings.some((w) => warning.test(w)),
    `warnings: ${JSON.stringify(c.warnings)}`,
  );
};

const table: Array<HostileRow<Input>> = [
  {
    name: "shell metacharacters in a value are kept literally",
    input: {
      config: { Env: ["FOO=a b;$(reboot)`id`|&<>'\"\\*?"] },
      check: (c) => assert.deepEqual(c.env, ["FOO=a b;$(reboot)`id`|&<>'\"\\*?"]),
    },
    expect: null,
  },
  {
    name: "a key that is shell code is dropped",
    input: {
      config: { Env: ["$(reboot)=x", "A;B=1", "OK=1"] },
      check: kept(["OK=1"], /"A;B=1" dropped/),
    },
    expect: null,
  },
  {
    name: "an entry without '=' is dropped",
    input: { config: { Env: ["JUSTANAME"] }, check: kept([], /"JUSTANAME" dropped/) },
    expect: null,
  },
  {
    name: "a value with a newline is dropped (one line per variable)",
    input: {
      config: { Env: ["NL=a\nexport X=1", "OK=2"] },
      check: kept(["OK=2"], /Env NL dropped/),
    },
    expect: null,
  },
  {
    name: "a value with NUL is dropped",
    input: { config: { Env: ["Z=a\u0000b"] }, check: kept([], /Env Z dropped/) },
    expect: null,
  },
  {
    name: "a relative WorkingDir is dropped",
    input: {
      config: { WorkingDir: "app" },
      check: (c) => {
        assert.equal(c.workingDir, null);
        assert.match(c.warnings.join("\n"), /WorkingDir "app" dropped/);
      },
    },
    expect: null,
  },
  {
    name: "Env names the shell owns are dropped (bash's read-only UID would end the shell)",
    input: {
      config: { Env: ["UID=1000", "EUID=0", "BASHOPTS=x", "IFS=,", "PS4=$(id)", "OK=3"] },
      check: (c) => {
        assert.deepEqual(c.env, ["OK=3"]);
        for (const k of ["UID", "EUID", "BASHOPTS", "IFS", "PS4"])
          assert.match(c.warnings.join("\n"), new RegExp(`Env ${k} dropped: the shell owns`));
      },
    },
    expect: null,
  },
  ...(
    [
      ["a double quote", '/srv/a"b', /double quote/],
      ["a control character", "/srv/a\u001bb", /control character/],
      ["a '..' component", "/srv/../etc", /'\.\.' component/],
      ["a component over 255 bytes", `/srv/${"x".repeat(256)}`, /255 bytes/],
    ] as const
  ).map(([what, dir, why]) => ({
    name: `a WorkingDir with ${what} is dropped, not handed to debugfs`,
    input: {
      config: { WorkingDir: dir, Env: ["OK=1"] },
      check: (c: ImageConfig) => {
        assert.equal(c.workingDir, null);
        assert.match(c.warnings.join("\n"), /WorkingDir .* dropped/);
        assert.match(c.warnings.join("\n"), why);
      },
    },
    expect: null,
  })),
  {
    name: "control characters in shown fields are kept as data (the CLI escapes them)",
    input: {
      config: { User: "\u001b]52;c;aGk=\u0007", Cmd: ["\u001b[2J"] },
      check: (c) => assert.deepEqual([c.user, c.cmd], ["\u001b]52;c;aGk=\u0007", ["\u001b[2J"]]),
    },
    expect: null,
  },
  {
    name: "Env as a string",
    input: { config: { Env: "PATH=/bin" } },
    expect: /Env is not a list of strings/,
  },
  {
    name: "Env with a number",
    input: { config: { Env: ["A=1", 2] } },
    expect: /Env is not a list of strings/,
  },
  {
    name: "Env with an object",
    input: { config: { Env: [{ A: 1 }] } },
    expect: /Env is not a list/,
  },
  {
    name: "Entrypoint as a string",
    input: { config: { Entrypoint: "sh -c 'x'" } },
    expect: /Entrypoint is not a list of strings/,
  },
  {
    name: "WorkingDir as a number",
    input: { config: { WorkingDir: 7 } },
    expect: /WorkingDir is not a string/,
  },
  {
    name: "ExposedPorts as a list",
    input: { config: { ExposedPorts: ["80/tcp"] } },
    expect: /ExposedPorts is not an object/,
  },
  { name: "config as a string", input: { config: "Env=1" }, expect: /config is not an object/ },
  {
    name: "too many Env entries",
    input: { config: { Env: Array.from({ length: 300 }, (_, i) => `V${i}=x`) } },
    expect: /Env has 300 entries, more than 256/,
  },
  {
    name: "huge Env values",
    input: { config: { Env: Array.from({ length: 10 }, (_, i) => `V${i}=${"x".repeat(10_000)}`) } },
    expect: /more than 65536/,
  },
];

let rowIndex = 0;
async function attempt(client: DaemonClient, input: Input): Promise<void> {
  const repo = `hostile/cfg${rowIndex}`;
  const name = `cfg${rowIndex++}`;
  await pushImage(registry.url, repo, "v1", [layer], {
    config: input.config as Record<string, unknown>,
  });
  try {
    const info = (await client.call("image.pull", {
      ref: `${registry.host}/${repo}:v1`,
      name,
    })) as {
      config: ImageConfig | null;
    };
    assert.ok(info.config, `${name}: no config kept`);
    input.check?.(info.config);
    // What the image said reaches the terminal escaped: no control character but the newlines.
    const shown = await run(bangerBin, ["image", "show", name], { env: daemon.env });
    assert.doesNotMatch(shown.stdout, /[\x00-\x09\x0b-\x1f\x7f-\x9f]/, `${name}: ${shown.stdout}`);
    await client.call("image.delete", { name });
  } finally {
    await client.call("image.cache.prune", { dryRun: false });
  }
}

test("hostile image configs are refused clearly, or kept with what cannot apply dropped", async () => {
  const client = await daemon.connect();
  try {
    await runTable(table, (input) => attempt(client, input), {
      daemon,
      roots: [daemon.home.home],
    });
  } finally {
    client.close();
  }
});
