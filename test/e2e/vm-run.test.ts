import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { processesNaming, vmmPids } from "../helpers/procs.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// `banger vm run` end to end: real VMs under TCG, the real bin/banger, OpenSSH.
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const banger = path.join(root, "bin", "banger");
let home: TempLayout;
const { cli } = bangerCli(() => home.env);
let repo: string;
let hostFiles: string;

async function vmNames(): Promise<string[]> {
  const r = await cli("vm", "list", "--json");
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as Array<{ name: string }>).map((v) => v.name);
}

/** Nothing of a VM is left: no row, no directory, no VMM of this home. */
async function assertNoVm(what: string): Promise<void> {
  assert.deepEqual(await vmNames(), [], `${what}: no VM row`);
  assert.deepEqual(await fs.readdir(home.layout.vmsDir).catch(() => []), [], `${what}: no VM dir`);
  assert.deepEqual(await vmmPids(home.home), [], `${what}: no VMM of this home`);
}

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-run-");
  await useSharedDefaultImage(home);
  repo = path.join(home.home, "my repo");
  await fs.mkdir(repo);
  await fs.writeFile(path.join(repo, "README.md"), "hello\n");
  // The headline `vm run ./repo -- make test`: the default image is a dev box (make, a C
  // compiler, python3 with pip and venv, the everyday tools). The recipe also checks what
  // vm run promised (the workspace, file_sync's owners and modes), then fails with 7.
  await fs.writeFile(
    path.join(repo, "hello.c"),
    '#include <stdio.h>\nint main(void) { puts("hello from gcc"); return 0; }\n',
  );
  await fs.writeFile(
    path.join(repo, "Makefile"),
    [
      "test:",
      "\ttest -f README.md",
      "\tpwd",
      "\tstat -c '%U:%G %a %n' /root/.gitconfig /root/.config/tool/run.sh",
      "\tmake -v",
      "\tpython3 -V",
      "\tpython3 -m pip --version",
      "\tpython3 -c 'import ensurepip, venv'",
      "\tcc -o /tmp/hello hello.c && /tmp/hello",
      "\tg++ --version",
      "\tjq --version",
      "\tfor t in git curl wget rg file tree patch rsync unzip zip xz bzip2 less vi tmux ssh; do \\",
      '\t  command -v $$t >/dev/null || { echo "missing: $$t"; exit 1; }; done',
      "\texit 7",
      "",
    ].join("\n"),
  );
  await run("git", ["init", "-q", repo]);
  await run("git", ["-C", repo, "add", "README.md", "hello.c", "Makefile"]);
  await run("git", [
    "-C",
    repo,
    "-c",
    "user.name=t",
    "-c",
    "user.email=t@example.com",
    "commit",
    "-qm",
    "first",
  ]);
  hostFiles = path.join(home.home, "host-files");
  await fs.mkdir(path.join(hostFiles, "tool"), { recursive: true });
  await fs.writeFile(path.join(hostFiles, "gitconfig"), "[user]\n\tname = T\n", { mode: 0o644 });
  await fs.writeFile(path.join(hostFiles, "tool", "run.sh"), "#!/bin/sh\n", { mode: 0o755 });
  await fs.mkdir(path.dirname(home.layout.configFile), { recursive: true });
  await fs.writeFile(
    home.layout.configFile,
    [
      "[vm_defaults]",
      'disk_size = "1G"',
      "",
      "[[file_sync]]",
      `host = "${hostFiles}/gitconfig"`,
      'guest = "~/.gitconfig"',
      "",
      "[[file_sync]]",
      `host = "${hostFiles}/tool"`,
      'guest = "/root/.config/tool"',
      "",
      "[[file_sync]]",
      `host = "${hostFiles}/missing"`,
      'guest = "~/missing"',
      "",
    ].join("\n"),
  );
});

after(async () => {
  await cleanupE2eHome(home);
});

test(
  "vm run --rm <repo> -- make test runs the repo's tests on the default image and deletes the VM",
  { timeout: 600_000 },
  async () => {
    const r = await cli("vm", "run", "--rm", "--name", "run-rm", repo, "--", "make", "test");
    // The recipe's `exit 7` is make's failure: status 2, and make names the 7.
    assert.equal(r.code, 2, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stderr, /make: \*\*\* \[Makefile:\d+: test\] Error 7/);
    assert.doesNotMatch(r.stdout, /^missing: /m);
    // The command ran in the imported workspace; file_sync landed root-owned with its modes.
    assert.match(r.stdout, /^\/root\/my repo$/m);
    assert.match(r.stdout, /^root:root 600 \/root\/\.gitconfig$/m);
    assert.match(r.stdout, /^root:root 755 \/root\/\.config\/tool\/run\.sh$/m);
    // The dev box: make, python3 with pip and venv, a C compiler that builds and runs.
    assert.match(r.stdout, /^GNU Make \d/m);
    assert.match(r.stdout, /^Python 3\.\d+\.\d+$/m);
    assert.match(r.stdout, /^pip \d+/m);
    assert.match(r.stdout, /^hello from gcc$/m);
    assert.match(r.stdout, /^g\+\+ .* \d+\.\d+/m);
    assert.match(r.stdout, /^jq-1\.\d/m);
    assert.match(r.stderr, /warning: file_sync: .*missing does not exist on this host; skipped/);
    assert.doesNotMatch(r.stderr, /still running/);
    await assertNoVm("after --rm");
  },
);

test(
  "a command that cannot start is a clear error; without --rm the VM stays and says how to remove it",
  { timeout: 600_000 },
  async () => {
    const r = await cli("vm", "run", "--name", "run-keep", "--", "no-such-tool", "--flag");
    assert.equal(r.code, 127, r.stderr);
    assert.match(r.stderr, /could not be started in the VM: no-such-tool: not found/);
    assert.match(r.stderr, /vm run-keep is still running \(stop with 'banger vm stop run-keep'/);
    assert.equal(r.stdout, "");
    // Without a repo the command runs in /root.
    assert.deepEqual(await vmNames(), ["run-keep"]);
    assert.equal((await vmmPids(home.home)).length, 1, "the kept VM runs");
    const pwd = await cli("vm", "ssh", "run-keep", "--", "pwd");
    assert.equal(pwd.stdout.trim(), "/root", pwd.stderr);
    assert.equal((await cli("vm", "delete", "run-keep")).code, 0);
    await assertNoVm("after delete");
  },
);

test("Ctrl-C during the command still deletes the VM with --rm", { timeout: 600_000 }, async () => {
  const child = spawn(banger, ["vm", "run", "--rm", "--name", "run-int", "--", "sleep", "600"], {
    env: home.env,
    detached: true, // its own process group, like a terminal's foreground job
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
  let closed = false;
  const exited = new Promise<number | null>((resolve) =>
    child.on("close", (code) => {
      closed = true;
      resolve(code);
    }),
  );
  try {
    // Wait until the remote command runs: this home's ssh (its known_hosts) with the command.
    const deadline = Date.now() + 300_000;
    const commandRuns = async () => {
      for (const { pid } of await processesNaming(home.home, (a) => path.basename(a) === "ssh")) {
        const argv = (await fs.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split(
          "\0",
        );
        if (argv.includes("HostKeyAlias=run-int.vm") && argv.join(" ").includes("sleep 600"))
          return true;
      }
      return false;
    };
    while (!(await commandRuns())) {
      assert.ok(!closed, `banger exited before the command ran:\n${stderr}`);
      assert.ok(Date.now() < deadline, `the command never started:\n${stderr}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    process.kill(-child.pid!, "SIGINT");
    const code = await exited;
    assert.equal(code, 130, stderr);
    assert.match(stderr, /interrupted/);
    await assertNoVm("after Ctrl-C");
  } finally {
    // On failure the detached group (banger, its ssh) must not outlive the test.
    if (!closed)
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
  }
});

test("bad vm run input fails before any VM exists", { timeout: 120_000 }, async () => {
  const cases: Array<[string[], RegExp]> = [
    [["vm", "run", repo, "make", "test"], /put the command after --/],
    [["vm", "run", "--branch", "x", "--", "true"], /--branch needs a repository path/],
    [["vm", "run", home.home, "--", "true"], /not inside a git repository/],
    [["vm", "run", repo, "--from", "no-such-ref", "--", "true"], /unknown ref "no-such-ref"/],
    [["vm", "run", "--name", "Bad_Name", "--", "true"], /invalid VM name/],
  ];
  for (const [args, message] of cases) {
    const r = await cli(...args);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
  }
  await assertNoVm("after bad input");
});
