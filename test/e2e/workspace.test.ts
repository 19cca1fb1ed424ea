import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { ensureBuilt } from "../helpers/build.js";
import { bangerCli } from "../helpers/cli.js";
import { useSharedDefaultImage } from "../helpers/shared-image.js";
import { tempLayout, type TempLayout } from "../helpers/temp-home.js";

// One real VM under QEMU microvm, driven through the real bin/banger: a repo goes in
// with `vm workspace prepare`, the guest changes it, `vm workspace export` brings a
// patch back that `git apply` takes on the host.
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

async function qemuPids(name: string): Promise<number[]> {
  const r = await run("pgrep", ["-f", `qemu-system-x86_64 -name banger-${name} `]).catch(() => ({
    stdout: "",
  }));
  return r.stdout.split("\n").filter(Boolean).map(Number);
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

before(async () => {
  await ensureBuilt(root);
  home = await tempLayout("banger-e2e-ws-");
  repo = path.join(home.home, "ws repo");
  await makeRepo(repo);
  await useSharedDefaultImage(home);
  await ok("vm", "create", "--name", VM, "--memory", "1G", "--disk-size", "2G");
});

after(async () => {
  for (const pid of await qemuPids(VM)) process.kill(pid, "SIGKILL");
  await cli("daemon", "stop");
  await home.cleanup();
});

test(
  "prepare imports exactly the tracked and untracked files, with modes, symlinks and odd names",
  {
    timeout: 600_000,
  },
  async () => {
    const none = await cli("vm", "workspace", "export", VM);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no workspace in VM wse2e-1/);

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
    assert.equal(await guest("ls /root/.banger | grep -c workspace-import || true"), "0\n");
    // The guest's .git holds a scrubbed config and no hooks: nothing of the host's secrets.
    assert.equal(
      await guest("grep -rc E2E-SECRET '/root/ws repo/.git' | grep -vc ':0$' || true"),
      "0\n",
    );
    assert.equal(
      await guest("test -e '/root/ws repo/.git/hooks' && echo hooks || echo none"),
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
      await guest(`cd '/root/ws repo' && git symbolic-ref -q HEAD || echo detached`),
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
  "bad input and a guest without git fail clearly and leave the workspace alone",
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
      const r = await cli("vm", "workspace", "prepare", VM, repo);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /git is not installed in VM wse2e-1/);
      assert.match(r.stderr, /apt-get install -y git/);
    } finally {
      await guest("chmod +x /usr/bin/git");
    }
    assert.equal(await guest("cat '/root/ws repo/.git/banger/base'"), base);
    await ok("vm", "delete", VM);
  },
);
