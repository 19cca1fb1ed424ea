import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { cleanupE2eHome } from "../helpers/e2e-cleanup.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// `banger vm session` and `banger vm workspace` against ONE real VM (QEMU microvm, TCG),
// driven through the real bin/banger: booting a VM costs most of a test here, so both
// commands' checks share it. Sessions first (they leave no workspace behind); then a repo
// goes in with `vm workspace prepare`, the guest changes it, and `vm workspace export`
// brings a patch back that `git apply` takes on the host.
const run = promisify(execFile);
const root = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));
const banger = path.join(root, "bin", "banger");
const VM = "wse2e-1";
let home: TempLayout;
const { cli, ok } = bangerCli(() => home.env);
let repo: string;

/** A shell script in the guest; its stdout. */
async function guest(script: string): Promise<string> {
  return (await ok("vm", "ssh", VM, "--", "sh", "-c", `set -e\n${script}`)).stdout;
}

async function git(dir: string, ...args: string[]): Promise<string> {
  return (await run("git", ["-C", dir, ...args])).stdout;
}

/**
 * Files and symlinks under the work tree (not .git), one `type mode name -> target`
 * per NUL-terminated record, sorted: the same on host and guest when the import is exact.
 */
const LIST_FILES = `find . -path ./.git -prune -o \\( -type f -o -type l \\) -printf '%y %m %P -> %l\\0' | sort -z | tr '\\0' '\\n'`;

/** A tree of what the work tree holds (minus ignored files), through a throwaway index (beside the real one: read-tree renames into it). */
const WORKTREE_TREE = `idx=.git/test-index-$$; git read-tree --index-output="$idx" HEAD 2>/dev/null || git read-tree --index-output="$idx" --empty; GIT_INDEX_FILE="$idx" git add -A; GIT_INDEX_FILE="$idx" git write-tree; rm -f "$idx"`;

async function hostSh(dir: string, script: string): Promise<string> {
  return (await run("sh", ["-c", script], { cwd: dir })).stdout;
}

/** A repo with every kind of entry the import must carry: committed, then dirtied. */
async function makeRepo(dir: string): Promise<void> {
  const write = async (name: string, data: string | Buffer, mode = 0o644) => {
    await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await fs.writeFile(path.join(dir, name), data);
    await fs.chmod(path.join(dir, name), mode);
  };
  await fs.mkdir(dir, { recursive: true });
  await git(dir, "init", "-q", "-b", "main");
  await git(dir, "config", "user.email", "host@example.com");
  await git(dir, "config", "user.name", "host");
  // Secrets of the host's .git that must not reach the guest.
  await git(dir, "config", "http.extraheader", "AUTHORIZATION: bearer E2E-SECRET-HEADER");
  await git(dir, "config", "remote.origin.url", "https://u:E2E-SECRET-TOKEN@git.example/r.git");
  await git(dir, "config", "credential.helper", "store --file /tmp/E2E-SECRET-HELPER");
  await write(".git/hooks/post-checkout", "#!/bin/sh\necho E2E-SECRET-HOOK\n", 0o755);
  await write(".gitignore", "*.log\nbuild/\n");
  await write("README.md", "hello\n");
  await write("run.sh", "#!/bin/sh\necho hi\n", 0o755);
  await fs.symlink("README.md", path.join(dir, "link"));
  await write("dir with space/a file.txt", "x\n");
  await write("naïve-ü.txt", "é\n");
  await write(`it's "quoted".txt`, "q\n");
  await write("blob.bin", Buffer.from([0, 1, 2, 0xff, 0xfe, 0, 10, 13]));
  await write("gone.txt", "soon deleted\n");
  await git(dir, "add", "-A");
  await git(dir, "commit", "-qm", "first");
  await git(dir, "tag", "v1");
  await write("second.txt", "second commit\n");
  await git(dir, "add", "second.txt");
  await git(dir, "commit", "-qm", "second");
  // Dirty: deleted tracked file, untracked files, ignored files, an uncommitted edit.
  await fs.rm(path.join(dir, "gone.txt"));
  await write("untracked.txt", "new\n");
  await write("-dash", "leading dash\n");
  await write("debug.log", "ignored\n");
  await write("build/out.o", "ignored\n");
  await fs.appendFile(path.join(dir, "README.md"), "host edit\n");
}

interface Session {
  name: string;
  state: string;
  pid: number | null;
  exitCode: number | null;
  startedAt: string | null;
  cwd: string;
  command: string;
}

const show = async (name: string): Promise<Session> =>
  JSON.parse((await ok("vm", "session", "show", VM, name, "--json")).stdout) as Session;

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-ws-");
  repo = path.join(home.home, "ws repo");
  await makeRepo(repo);
  await useSharedDefaultImage(home);
  await ok("vm", "create", "--name", VM, "--memory", "1G", "--disk-size", "2G");
});

after(async () => {
  await cleanupE2eHome(home);
});

// ---- sessions ----

test(
  "start → list → show → send → logs → stop; kill; logs -f; clear errors",
  { timeout: 600_000 },
  async () => {
    const started = await ok(
      "vm",
      "session",
      "start",
      VM,
      "echo",
      "--cwd",
      "/tmp",
      "--",
      "sh",
      "-c",
      'echo ready; while read -r l; do echo "got:$l"; done',
    );
    assert.match(started.stdout, /^echo started \(pid \d+\)$/m);

    const list = JSON.parse((await ok("vm", "session", "list", VM, "--json")).stdout) as Session[];
    assert.deepEqual(
      list.map((s) => [s.name, s.state]),
      [["echo", "running"]],
    );
    const table = (await ok("vm", "session", "ls", VM)).stdout;
    assert.match(table, /^NAME\s+STATE\s+PID\s+EXIT\s+STARTED\s+COMMAND$/m);

    const info = await show("echo");
    assert.equal(info.state, "running");
    assert.equal(info.cwd, "/tmp");
    assert.ok(info.pid && info.pid > 1, JSON.stringify(info));
    assert.match(info.command, /^sh -c 'echo ready;/);

    // The SSH connection that started it is long gone: the process still runs in the guest
    // (not a zombie), it is the session's command, and no sshd is among its ancestors.
    const proc = (
      await guest(`p=${info.pid}
awk '/^State:/ {print "state", $2}' /proc/$p/status
printf 'cmdline %s\\n' "$(tr '\\0' ' ' </proc/$p/cmdline)"
while [ "$p" -gt 1 ]; do
  p=$(awk '/^PPid:/ {print $2}' /proc/$p/status)
  echo "ancestor $(cat /proc/$p/comm)"
done`)
    ).split("\n");
    assert.ok(proc.includes("state S") || proc.includes("state R"), proc.join("\n"));
    assert.ok(
      proc.some((l) => l.startsWith("cmdline sh -c echo ready;")),
      proc.join("\n"),
    );
    const ancestors = proc.filter((l) => l.startsWith("ancestor ")).map((l) => l.slice(9));
    assert.ok(ancestors.length > 0, proc.join("\n"));
    assert.ok(!ancestors.includes("sshd"), `no sshd among ${ancestors.join(" < ")}`);

    await ok("vm", "session", "send", VM, "echo", "hello from the host");
    let logs = "";
    for (let i = 0; i < 60 && !logs.includes("got:hello from the host"); i++) {
      logs = (await ok("vm", "session", "logs", VM, "echo")).stdout;
      if (!logs.includes("got:")) await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(logs, "ready\ngot:hello from the host\n");

    const stopped = await ok("vm", "session", "stop", VM, "echo");
    assert.match(stopped.stdout, /echo exited with code 143 \(signal 15\)/);
    const ended = await show("echo");
    assert.equal(ended.state, "exited");
    assert.equal(ended.exitCode, 143);
    const gone = await cli("vm", "ssh", VM, "--", "kill", "-0", String(info.pid));
    assert.notEqual(gone.code, 0, "the process is gone");

    // A session that ignores SIGTERM: kill ends it at once.
    await ok(
      "vm",
      "session",
      "start",
      VM,
      "stubborn",
      "--",
      "sh",
      "-c",
      "trap '' TERM; while :; do sleep 1; done",
    );
    const killed = await ok("vm", "session", "kill", VM, "stubborn");
    assert.match(killed.stdout, /stubborn exited with code 137 \(signal 9\)/);

    // Clear errors, and nothing started by them.
    await ok("vm", "session", "start", VM, "busy", "--", "sleep", "600");
    const cases: Array<[string[], RegExp]> = [
      [["start", VM, "busy", "--", "true"], /session 'busy' is already running/],
      [["start", VM, "nocmd", "--", "no-such-command"], /'no-such-command' is not an executable/],
      [["start", VM, "Bad Name", "--", "true"], /invalid session name "Bad Name"/],
      [["start", VM, "nothing"], /no command to start/],
      [["send", VM, "echo", "late"], /session 'echo' is not running \(exited\)/],
      [["show", VM, "ghost"], new RegExp(`no session named 'ghost' in VM ${VM}`)],
    ];
    for (const [args, pattern] of cases) {
      const r = await cli("vm", "session", ...args);
      assert.equal(r.code, 1, args.join(" "));
      assert.match(r.stderr, pattern);
      assert.match(r.stderr, /hint: /, "the error says what to do next");
    }
    const names = (
      JSON.parse((await ok("vm", "session", "list", VM, "--json")).stdout) as Session[]
    ).map((s) => s.name);
    assert.deepEqual(names.sort(), ["busy", "echo", "stubborn"]);
    await ok("vm", "session", "kill", VM, "busy");

    // logs -f prints everything and returns when the session exits.
    await ok(
      "vm",
      "session",
      "start",
      VM,
      "ticker",
      "--",
      "sh",
      "-c",
      "for i in 1 2 3; do echo tick$i; sleep 1; done; exit 4",
    );
    const followed = await ok("vm", "session", "logs", VM, "ticker", "-f");
    assert.equal(followed.stdout, "tick1\ntick2\ntick3\n");
    assert.match(followed.stderr, /session ticker exited with code 4/);
    assert.equal((await show("ticker")).exitCode, 4);

    // An exited name can be reused.
    await ok("vm", "session", "start", VM, "ticker", "--", "sh", "-c", "echo again");
    const again = await ok("vm", "session", "logs", VM, "ticker", "-f");
    assert.equal(again.stdout, "again\n");
  },
);

// ---- workspaces ----

test(
  "prepare imports exactly the tracked and untracked files, with modes, symlinks and odd names",
  {
    timeout: 600_000,
  },
  async () => {
    const none = await cli("vm", "workspace", "export", VM);
    assert.equal(none.code, 1);
    assert.match(none.stderr, new RegExp(`no workspace in VM ${VM}`));

    // Any directory inside the checkout names the repo; the CLI makes the path absolute.
    const prepared = await run(banger, ["vm", "workspace", "prepare", VM, "dir with space"], {
      env: home.env,
      cwd: repo,
      timeout: 600_000,
    });
    assert.equal(prepared.stdout, "/root/ws repo\n");

    const expected = [
      "f 644 -dash -> ",
      "f 644 .gitignore -> ",
      "f 644 README.md -> ",
      "f 644 blob.bin -> ",
      "f 644 dir with space/a file.txt -> ",
      `f 644 it's "quoted".txt -> `,
      "f 644 naïve-ü.txt -> ",
      "f 644 second.txt -> ",
      "f 644 untracked.txt -> ",
      "f 755 run.sh -> ",
      "l 777 link -> README.md",
    ];
    const inGuest = (await guest(`cd '/root/ws repo'\n${LIST_FILES}`)).split("\n").filter(Boolean);
    assert.deepEqual([...inGuest].sort(), [...expected].sort());
    assert.deepEqual(
      (await hostSh(repo, LIST_FILES)).split("\n").filter((l) => l && !/\.log|build\//.test(l)),
      inGuest,
      "the host's non-ignored files, exactly",
    );
    // Git in the guest sees the host's history and the same uncommitted changes.
    const status = (dir: string) =>
      `cd ${dir} && git rev-parse HEAD && git symbolic-ref HEAD && git status --porcelain`;
    assert.equal(await guest(status("'/root/ws repo'")), await hostSh(repo, status(".")));
    // The import's temp dir is gone; the record of the workspace is there (ls fails, and so
    // does this, if banger's state dir is missing).
    const state = (await guest("ls -A /root/.banger")).split("\n").filter(Boolean);
    assert.ok(state.includes("workspace"), `the workspace record in: ${state.join(" ")}`);
    assert.deepEqual(
      state.filter((f) => /^workspace-(import|old)\./.test(f)),
      [],
      "no temp dir left",
    );
    // The guest's .git holds a scrubbed config and no hooks: nothing of the host's secrets.
    // grep exits 1 for "read everything, found nothing", 0 for a find, 2 for an error. One
    // command a line: set -e ignores a failure inside an && list, so a missing .git would
    // have grepped somewhere else and found nothing.
    assert.equal(
      await guest(`cd '/root/ws repo/.git'
test -f config
test -f HEAD
n=0
grep -rl E2E-SECRET . || n=$?
echo "grep exit $n"`),
      "grep exit 1\n",
    );
    assert.equal(
      await guest(`cd '/root/ws repo/.git'
test -f HEAD
if [ -e hooks ]; then echo hooks; else echo none; fi`),
      "none\n",
    );
    assert.equal(
      await guest("git -C '/root/ws repo' config remote.origin.url"),
      "https://git.example/r.git\n",
    );
  },
);

test(
  "export returns the guest's commits, edits and new files; the host applies the patch",
  {
    timeout: 600_000,
  },
  async () => {
    const before = await guest(`cd '/root/ws repo'
git config user.email guest@example.com
git config user.name guest
git rm -q 'dir with space/a file.txt'
printf 'guest commit\\n' >> README.md
git commit -qam 'guest commit'
printf '\\000\\001binary\\377\\000' > new.bin
printf 'changed\\000\\002' > blob.bin
chmod +x naïve-ü.txt
printf 'new\\n' > 'new file ü.txt'
printf 'ignored\\n' > guest.log
printf 'staged\\n' > staged.txt && git add staged.txt
echo "$(sha256sum .git/index) $(git rev-parse HEAD) $(git status --porcelain | sha256sum)"`);

    const names = await ok("vm", "workspace", "export", VM, "--name-only");
    assert.deepEqual(
      names.stdout.split("\n").filter(Boolean).sort(),
      [
        "README.md",
        "blob.bin",
        "dir with space/a file.txt",
        "naïve-ü.txt",
        "new file ü.txt",
        "new.bin",
        "staged.txt",
      ].sort(),
    );
    const patchFile = path.join(home.home, "changes.patch");
    await ok("vm", "workspace", "export", VM, "-o", patchFile);
    const stdoutPatch = await run(banger, ["vm", "workspace", "export", VM], {
      env: home.env,
      encoding: "buffer",
      maxBuffer: 64 * 2 ** 20,
    });
    assert.ok(stdoutPatch.stdout.equals(await fs.readFile(patchFile)), "stdout and -o agree");
    assert.match(await fs.readFile(patchFile, "latin1"), /GIT binary patch/);

    // Export is non-mutating: the guest's index bytes, HEAD and status are as they were.
    const afterExport = await guest(
      `cd '/root/ws repo'\necho "$(sha256sum .git/index) $(git rev-parse HEAD) $(git status --porcelain | sha256sum)"`,
    );
    assert.equal(afterExport, before);
    assert.equal(await guest("ls -a '/root/ws repo/.git/banger'"), ".\n..\nbase\n");

    // The patch applies cleanly to the checkout it came from, and then the two agree.
    await git(repo, "apply", "--check", patchFile);
    await git(repo, "apply", patchFile);
    assert.equal(
      await hostSh(repo, WORKTREE_TREE),
      await guest(`cd '/root/ws repo'\n${WORKTREE_TREE}`),
    );
    assert.deepEqual(
      await fs.readFile(path.join(repo, "new.bin")),
      Buffer.from([0, 1, ...Buffer.from("binary"), 0xff, 0]),
    );
    assert.equal((await fs.stat(path.join(repo, "naïve-ü.txt"))).mode & 0o777, 0o755);
  },
);

test(
  "--from checks out that commit, --branch names it, re-prepare replaces the workspace",
  {
    timeout: 600_000,
  },
  async () => {
    const v1 = (await git(repo, "rev-parse", "v1")).trim();
    const r = await ok(
      "vm",
      "workspace",
      "prepare",
      VM,
      repo,
      "--from",
      "v1",
      "--branch",
      "fix/one",
    );
    assert.equal(r.stdout, "/root/ws repo\n");
    // The commit's files and nothing else: not the host's edits or untracked files.
    assert.equal(
      await guest(
        `cd '/root/ws repo' && git rev-parse HEAD && git symbolic-ref --short HEAD && git status --porcelain --ignored && git -c core.quotePath=false ls-files`,
      ),
      `${v1}\nfix/one\n${await git(repo, "-c", "core.quotePath=false", "ls-tree", "-r", "--name-only", "v1")}`,
    );
    // Nothing changed yet: the base is the commit itself.
    assert.equal((await ok("vm", "workspace", "export", VM)).stdout, "");
    await guest(`cd '/root/ws repo' && echo edited >> README.md`);
    assert.equal((await ok("vm", "workspace", "export", VM, "--name-only")).stdout, "README.md\n");

    await ok("vm", "workspace", "prepare", VM, repo, "--from", "HEAD");
    assert.equal(
      await guest(`cd '/root/ws repo'\ngit symbolic-ref -q HEAD || echo detached`),
      "detached\n",
    );

    await ok("vm", "workspace", "prepare", VM, repo, "--branch", "topic");
    assert.equal(
      await guest(`cd '/root/ws repo' && git symbolic-ref --short HEAD && test -f untracked.txt`),
      "topic\n",
    );
  },
);

test(
  "bad input fails clearly and leaves the workspace alone; without git, --branch and export say so first and a plain prepare works",
  {
    timeout: 600_000,
  },
  async () => {
    const cases: Array<[string[], RegExp]> = [
      [[home.home], /is not inside a git repository/],
      [[path.join(home.home, "missing")], /is not a directory/],
      [[repo, "--from", "no-such-ref"], /unknown ref "no-such-ref"/],
      [[repo, "--branch", "bad..name"], /invalid branch name "bad\.\.name"/],
    ];
    for (const [args, pattern] of cases) {
      const r = await cli("vm", "workspace", "prepare", VM, ...args);
      assert.equal(r.code, 1, args.join(" "));
      assert.match(r.stderr, pattern);
    }
    const base = await guest("cat '/root/ws repo/.git/banger/base'");
    await guest("chmod -x /usr/bin/git");
    try {
      // What needs git in the guest says so before it changes anything.
      const branch = await cli("vm", "workspace", "prepare", VM, repo, "--branch", "b");
      assert.equal(branch.code, 1);
      assert.match(branch.stderr, new RegExp(`--from and --branch .* VM ${VM} has no git`));
      const exp = await cli("vm", "workspace", "export", VM);
      assert.equal(exp.code, 1);
      assert.match(exp.stderr, new RegExp(`workspace export needs git in the guest, and VM ${VM}`));
      assert.equal(await guest("cat '/root/ws repo/.git/banger/base'"), base);
      // A plain prepare needs only tar: the files arrive, no base is recorded.
      const plain = await ok("vm", "workspace", "prepare", VM, repo);
      assert.match(plain.stderr, /the guest has no git/);
      assert.equal(await guest("test -e '/root/ws repo/.git/banger/base' || echo none"), "none\n");
    } finally {
      await guest("chmod +x /usr/bin/git");
    }
  },
);
