import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { ensureBuilt } from "../helpers/build.js";
import { bangerBin, bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { pushContainerImages } from "../helpers/container-images.js";
import { vmmPids } from "../helpers/procs.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { skopeoSave } from "../helpers/skopeo.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// Container images banger has no say in, booted as VMs under TCG with banger's toolkit, offline
// (no --nat): a busybox-only image (a static busybox and nothing else: no libc, no /etc/passwd,
// no init) and a Debian minbase (no systemd, no sshd, no ip, no git), both from a real local
// registry, and the minbase again as skopeo saves it (docker-archive, oci-archive), imported.
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
let home: TempLayout;
let registry: TestRegistry;
let repo: string;
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
  for (const [kind, name] of [
    ["docker-archive", "debmin-docker"],
    ["oci-archive", "debmin-oci"],
  ] as const) {
    const file = path.join(home.home, `${name}.tar`);
    await skopeoSave(registry.host, "test/minbase", "1", kind, file, home.home);
    await ok("image", "import", file, "--name", name);
    await fs.rm(file);
  }
  // A small repo: a commit, an uncommitted edit and an untracked file; no guest here has git.
  repo = path.join(home.home, "demo");
  await fs.mkdir(repo);
  const git = (...args: string[]) => run("git", ["-C", repo, ...args]);
  await git("init", "-q", "-b", "main");
  await fs.writeFile(path.join(repo, "README.md"), "committed\n");
  await git("add", "README.md");
  await git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "first");
  await fs.writeFile(path.join(repo, "README.md"), "edited on the host\n");
  await fs.writeFile(path.join(repo, "notes.txt"), "untracked\n");
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
  ["debmin-docker", /^ID=debian$/m],
  ["debmin-oci", /^ID=debian$/m],
] as const) {
  test(
    `${image}: banger's init; vm run ./repo exits with the command's status; a workspace without git; vm ssh gives a shell; stop powers off`,
    {
      timeout: 900_000,
    },
    async () => {
      const info = JSON.parse((await ok("image", "show", image, "--json")).stdout) as {
        init: string | null;
      };
      assert.equal(info.init, "/usr/lib/banger/init", "recorded at pull: the image has no systemd");

      // One VM per image, for every check: `vm run` always makes a new VM, and --rm's delete is
      // the same on any image (test/e2e/vm-run.test.ts checks it), so this one is kept.
      const name = `${image}-vm`;
      try {
        const osCheck = osRelease ? "cat /etc/os-release; " : "";
        const r = await cli(
          "vm",
          "run",
          "--name",
          name,
          "--image",
          image,
          repo,
          "--",
          "sh",
          "-c",
          `pwd; cat README.md notes.txt; ${osCheck}exit 7`,
        );
        assert.equal(r.code, 7, r.stderr);
        // The work tree as it is on the host (the edit, the untracked file), by the guest's tar.
        assert.match(r.stdout, /^\/root\/demo\nedited on the host\nuntracked\n/);
        if (osRelease) assert.match(r.stdout, osRelease);

        // The verb itself: the files arrive, and prepare says export will not work here.
        const again = await ok("vm", "workspace", "prepare", name, repo);
        assert.equal(again.stdout, "/root/demo\n");
        assert.match(
          again.stderr,
          /the guest has no git, so 'banger vm workspace export' will not/,
        );
        await ok("vm", "ssh", name, "--", "sh", "-c", "echo guest > /root/demo/guest.txt");
        // What needs git says so before anything changed.
        const branch = await cli("vm", "workspace", "prepare", name, repo, "--branch", "fix");
        assert.notEqual(branch.code, 0);
        assert.match(branch.stderr, /--from and --branch check a commit out in the guest/);
        const exp = await cli("vm", "workspace", "export", name);
        assert.notEqual(exp.code, 0);
        assert.match(
          exp.stderr,
          /workspace export needs git in the guest.*default debian-bookworm image has it/s,
        );
        const kept = await ok("vm", "ssh", name, "--", "cat", "/root/demo/guest.txt");
        assert.equal(kept.stdout, "guest\n", "the failed prepare left the workspace as it was");

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
