import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureBuilt } from "../helpers/build.js";
import { bangerBin, bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { pushContainerImages } from "../helpers/container-images.js";
import { vmmPids } from "../helpers/procs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// Container images banger has no say in, booted as VMs under TCG with banger's toolkit, offline
// (no --nat): a busybox-only image (a static busybox and nothing else: no libc, no /etc/passwd,
// no init) and a Debian minbase (no systemd, no sshd, no ip), both from a real local registry.
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
let registry: TestRegistry;
const { cli, ok } = bangerCli(() => home.env);

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-cimg-");
  // The images first: building minbase takes minutes and boots nothing, so it runs before
  // this file joins the VM lane (useSharedDefaultImage).
  registry = await startRegistry();
  const refs = await pushContainerImages(registry, home.home);
  await ok("image", "pull", refs.busybox, "--name", "bbox");
  await ok("image", "pull", refs.minbase, "--name", "debmin");
  await useSharedDefaultImage(home);
});

after(async () => {
  await cleanupE2eHome(home, { extra: [() => registry?.stop()] });
});

/** Runs `banger vm ssh <name>` with no command, the script on its stdin: a login shell reads it. */
function sshShell(name: string, script: string): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bangerBin, ["vm", "ssh", name], {
      env: home.env,
      stdio: ["pipe", "pipe", "inherit"],
    });
    let stdout = "";
    child.stdout.on("data", (c: Buffer) => (stdout += c.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout });
    });
    child.stdin.end(script);
  });
}

for (const [image, osRelease] of [
  ["bbox", null],
  ["debmin", /^ID=debian$/m],
] as const) {
  test(
    `${image}: banger's init, vm run exits with the command's status, vm ssh gives a shell, stop powers off`,
    {
      timeout: 900_000,
    },
    async () => {
      const info = JSON.parse((await ok("image", "show", image, "--json")).stdout) as {
        init: string | null;
      };
      assert.equal(info.init, "/usr/lib/banger/init", "recorded at pull: the image has no systemd");

      const r = await cli("vm", "run", "--rm", "--image", image, "--", "sh", "-c", "exit 7");
      assert.equal(r.code, 7, r.stderr);
      assert.deepEqual(await vmmPids(home.home), [], "--rm left no VMM");

      const name = `${image}-vm`;
      await ok("vm", "create", "--image", image, "--name", name);
      try {
        if (osRelease) {
          const cat = await ok("vm", "ssh", name, "--", "cat", "/etc/os-release");
          assert.match(cat.stdout, osRelease);
        }
        // root's shell: the image's bash where it has one (a login shell: $0 is -bash), banger's
        // busybox sh (through /usr/lib/banger/login-shell) where it has none.
        const shell = await sshShell(name, 'echo "shell=$0 home=$HOME sum=$((6 * 7))"; exit 3\n');
        assert.equal(shell.code, 3);
        assert.match(
          shell.stdout,
          image === "bbox"
            ? /shell=\/usr\/lib\/banger\/bin\/sh home=\/root sum=42/
            : /shell=-bash home=\/root sum=42/,
        );
        await ok("vm", "stop", name);
        const logs = await ok("vm", "logs", name);
        assert.match(logs.stdout, /banger-init: powering off/, "the guest powered itself off");
        assert.doesNotMatch(logs.stdout, /apt-get|installing/);
      } finally {
        await cli("vm", "delete", name);
      }
      assert.deepEqual(await vmmPids(home.home), []);
    },
  );
}
