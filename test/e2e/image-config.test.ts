import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureBuilt } from "../helpers/build.js";
import { bangerBin, bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { makeLayer } from "../helpers/layer.js";
import { vmmPids } from "../helpers/procs.js";
import { pushImage, startRegistry, type TestRegistry } from "../helpers/registry.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// An image's OCI Env and WorkingDir in a VM (under TCG, offline): a busybox-only image with a
// tool in a directory only the image's PATH names, an Env value full of shell metacharacters,
// a WorkingDir under /root (the common WORKDIR /root/app), which the VM's work disk mounted on
// /root hides, so the guest has to make it again, and an /etc/profile that resets PATH as
// Debian's does (then sources /etc/profile.d). One VM serves every check.
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
let registry: TestRegistry;
const { cli, ok } = bangerCli(() => home.env);
const VM = "cfg-vm";
const FOO = "a b;$(x)";

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-cfg-");
  registry = await startRegistry();
  const layer = await makeLayer([
    { name: "bin/", type: "directory" },
    { name: "bin/busybox", body: await fs.readFile("/bin/busybox"), mode: 0o755 },
    { name: "opt/tool/bin/", type: "directory" },
    {
      name: "opt/tool/bin/hello",
      body: '#!/bin/busybox sh\necho "hello from the image\'s PATH"\n',
      mode: 0o755,
    },
    { name: "etc/", type: "directory" },
    {
      name: "etc/profile",
      body: 'PATH=/usr/bin:/bin\nexport PATH\nfor f in /etc/profile.d/*.sh; do [ -r "$f" ] && . "$f"; done\n',
    },
  ]);
  await pushImage(registry.url, "test/configured", "v1", [layer], {
    config: {
      Env: ["PATH=/opt/tool/bin:/usr/bin:/bin", `FOO=${FOO}`],
      WorkingDir: "/root/app",
      Cmd: ["hello"],
    },
  });
  await ok("image", "pull", `${registry.host}/test/configured:v1`, "--name", "cfg");
  await useSharedDefaultImage(home);
  await ok("vm", "create", "--image", "cfg", "--name", VM);
});

after(async () => {
  await cleanupE2eHome(home, { extra: [() => registry?.stop()] });
});

/** `banger vm ssh <vm>` with no command, the script on its stdin: a login shell reads it. */
function sshShell(script: string): { code: number; stdout: string } {
  const r = spawnSync(bangerBin, ["vm", "ssh", VM], {
    env: home.env,
    input: script,
    encoding: "utf8",
    timeout: 120_000,
  });
  return { code: r.status ?? 1, stdout: r.stdout };
}

test("image show prints the config the pull kept", { timeout: 60_000 }, async () => {
  const shown = (await ok("image", "show", "cfg")).stdout;
  assert.match(shown, /^env: +PATH=\/opt\/tool\/bin:\/usr\/bin:\/bin$/m);
  assert.match(shown, /^env: +FOO=a b;\$\(x\)$/m);
  assert.match(shown, /^workdir: +\/root\/app$/m);
  assert.match(shown, /^cmd: +\["hello"\]$/m);
});

test(
  "vm ssh -- cmd: the image's PATH finds its tool, FOO arrives literally, pwd is WorkingDir",
  { timeout: 300_000 },
  async () => {
    const r = await ok("vm", "ssh", VM, "--", "sh", "-c", 'hello; printf "%s\\n" "$FOO"; pwd');
    assert.equal(r.stdout, `hello from the image's PATH\n${FOO}\n/root/app\n`);
    // A command that is not there still gets banger's clear error.
    const missing = await cli("vm", "ssh", VM, "--", "no-such-tool");
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /could not be started in the VM: no-such-tool: not found/);
  },
);

test(
  "an interactive vm ssh shell keeps the image's env through an /etc/profile that resets PATH",
  { timeout: 300_000 },
  async () => {
    const r = sshShell('echo "path=$PATH"; echo "foo=$FOO"; echo "pwd=$(pwd)"; hello; exit 0\n');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^path=\/opt\/tool\/bin:\/usr\/bin:\/bin(:|$)/m);
    assert.match(r.stdout, /^foo=a b;\$\(x\)$/m);
    assert.match(r.stdout, /^pwd=\/root\/app$/m);
    assert.match(r.stdout, /^hello from the image's PATH$/m);
  },
);

test(
  "a session runs with the image's env, in its WorkingDir unless --cwd says otherwise",
  { timeout: 300_000 },
  async () => {
    await ok(
      "vm",
      "session",
      "start",
      VM,
      "env",
      "--",
      "sh",
      "-c",
      'hello; printf "%s\\n" "$FOO"; pwd',
    );
    await ok("vm", "session", "start", VM, "tmp", "--cwd", "/tmp", "--", "sh", "-c", "pwd");
    for (const name of ["env", "tmp"]) {
      for (let i = 0; i < 60; i++) {
        const s = JSON.parse((await ok("vm", "session", "show", VM, name, "--json")).stdout) as {
          state: string;
        };
        if (s.state !== "running") break;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    const logs = (await ok("vm", "session", "logs", VM, "env")).stdout;
    assert.equal(logs, `hello from the image's PATH\n${FOO}\n/root/app\n`);
    assert.equal((await ok("vm", "session", "logs", VM, "tmp")).stdout, "/tmp\n");
  },
);

test("banger's own stop still works on the image; the VM goes", { timeout: 300_000 }, async () => {
  // vm stop asks the guest over banger's own ssh (no image env): it powers off.
  await ok("vm", "stop", VM);
  await ok("vm", "delete", VM);
  assert.deepEqual(await vmmPids(home.home), []);
});
