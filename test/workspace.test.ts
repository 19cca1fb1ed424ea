import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough, type Readable } from "node:stream";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import type { BangerError } from "../src/api/errors.js";
import { VmService } from "../src/vm/service.js";
import { WorkspaceService, type GuestExec } from "../src/daemon/workspace-service.js";
import { loadGuestScripts } from "../src/guest/scripts.js";
import {
  COMMIT_MARKER,
  COMMIT_MEMBER,
  exportError,
  GuestStatus,
  guestDirFor,
  workspaceExportArgs,
  workspaceImportArgs,
  workspaceRemoteCommand,
} from "../src/guest/workspace.js";
import { shellQuote } from "../src/guest/ssh.js";
import { listWorkTree } from "../src/workspace/files.js";
import { planWorkspace, type TarPart } from "../src/workspace/plan.js";
import { checkBranchName, findRepo, resolveCommit } from "../src/workspace/repo.js";
import { commitTrailer, gnuTarSource, type TarSourceFactory } from "../src/workspace/stream.js";
import type { GuestTarget } from "../src/guest/ssh.js";
import { Store } from "../src/store/store.js";
import { createCommandRunner, type CommandRunner } from "../src/system/runner.js";
import { fakeDriver, fakeHandles } from "./helpers/fake-driver.js";
import { imageServices } from "./helpers/services.js";
import { tempLayout, type TempLayout } from "./helpers/temp-home.js";
import { vmRow } from "./helpers/vm-row.js";

// Host side with real git and tar on temp repos; the guest side is a fake (test/e2e/workspace.test.ts has real VMs).
const exec = promisify(execFile);
const runner = createCommandRunner();
const { workspace: script } = loadGuestScripts();
let scratch: string;

async function gitIn(dir: string, ...args: string[]): Promise<string> {
  return (await exec("git", ["-C", dir, ...args])).stdout;
}

/** A repo with every kind of name the import must carry, committed, then dirtied. */
async function makeRepo(dir: string): Promise<void> {
  await fs.mkdir(path.join(dir, "dir with space"), { recursive: true });
  await gitIn(dir, "init", "-q", "-b", "main");
  await gitIn(dir, "config", "user.email", "t@example.com");
  await gitIn(dir, "config", "user.name", "t");
  await fs.writeFile(path.join(dir, ".gitignore"), "*.log\nbuild/\n");
  await fs.writeFile(path.join(dir, "README.md"), "hello\n");
  await fs.writeFile(path.join(dir, "run.sh"), "#!/bin/sh\necho hi\n", { mode: 0o755 });
  await fs.symlink("README.md", path.join(dir, "link"));
  await fs.writeFile(path.join(dir, "dir with space", "a file.txt"), "x\n");
  await fs.writeFile(path.join(dir, "naïve-ü.txt"), "é\n");
  await fs.writeFile(path.join(dir, "gone.txt"), "soon deleted\n");
  await gitIn(dir, "add", "-A");
  await gitIn(dir, "commit", "-qm", "init");
  await fs.rm(path.join(dir, "gone.txt"));
  await fs.writeFile(path.join(dir, "untracked.txt"), "new\n");
  await fs.writeFile(path.join(dir, "-dash"), "leading dash\n");
  await fs.writeFile(path.join(dir, "new\nline.txt"), "newline in the name\n");
  await fs.writeFile(path.join(dir, "debug.log"), "ignored\n");
  await fs.mkdir(path.join(dir, "build"));
  await fs.writeFile(path.join(dir, "build", "out.o"), "ignored\n");
}

let repo: string;

before(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), "banger-ws-"));
  repo = path.join(scratch, "my repo");
  await fs.mkdir(repo);
  await makeRepo(repo);
});

after(async () => {
  await fs.rm(scratch, { recursive: true, force: true });
});

test("the work tree list: tracked and untracked, not ignored, not deleted", async () => {
  const { names } = await listWorkTree(runner, repo);
  assert.deepEqual(
    [...names].sort(),
    [
      "-dash",
      ".gitignore",
      "README.md",
      "dir with space/a file.txt",
      "link",
      "naïve-ü.txt",
      "run.sh",
      "untracked.txt",
      "new\nline.txt",
    ].sort(),
  );
});

test("repo, ref and name checks fail clearly on the host", async () => {
  const found = await findRepo(runner, path.join(repo, "dir with space"));
  assert.equal(found.top, repo);
  assert.equal(found.gitDir, path.join(repo, ".git"));
  assert.equal(found.commonDir, path.join(repo, ".git"));
  await assert.rejects(findRepo(runner, scratch), /is not inside a git repository/);
  await assert.rejects(findRepo(runner, path.join(scratch, "nope")), /is not a directory/);

  assert.match(await resolveCommit(runner, repo, "HEAD"), /^[0-9a-f]{40}$/);
  await assert.rejects(resolveCommit(runner, repo, "no-such-ref"), /unknown ref "no-such-ref"/);
  await assert.rejects(resolveCommit(runner, repo, "--all"), /unknown ref "--all"/);

  await checkBranchName(runner, repo, "feature/x");
  for (const bad of ["bad..name", "-x", "@{-1}", "a b", "x.lock", ""])
    await assert.rejects(checkBranchName(runner, repo, bad), /invalid branch name/, bad);

  assert.equal(guestDirFor("/home/me/my repo"), "/root/my repo");
  assert.throws(() => guestDirFor("/tmp/a\nb"), /cannot be used in the guest/);
  assert.throws(() => guestDirFor("/home/me/.ssh"), /starts with a dot/);
  assert.throws(() => guestDirFor("/home/me/.config"), /starts with a dot/);
});

test("the tar stream carries modes, symlinks, odd names and .git; locks and worktree admin dirs stay home", async () => {
  // A lock left by a host git process, and a linked worktree's admin dir, must not travel.
  await fs.writeFile(path.join(repo, ".git", "index.lock"), "");
  const linked = path.join(scratch, "linked");
  await gitIn(repo, "worktree", "add", "-q", "-b", "side", linked);
  try {
    const plan = await planWorkspace(runner, await findRepo(runner, repo), { withWorkTree: true });
    assert.deepEqual(
      plan.parts.map((p) => p.dest),
      [".", ".git"],
    );
    const gitNames = plan.parts[1]!.names;
    assert.ok(gitNames.includes("HEAD") && gitNames.includes("refs/heads"), "refs dirs travel");
    assert.ok(!gitNames.some((n) => n.endsWith(".lock")), "no lock files");
    assert.ok(!gitNames.some((n) => n.startsWith("worktrees")), "no worktree admin dirs");

    const out = path.join(scratch, "extracted");
    await extractAll(gnuTarSource(plan.parts), out);
    assert.equal((await fs.stat(path.join(out, "run.sh"))).mode & 0o777, 0o755);
    assert.equal(await fs.readlink(path.join(out, "link")), "README.md");
    assert.equal(await fs.readFile(path.join(out, "naïve-ü.txt"), "utf8"), "é\n");
    assert.equal(
      await fs.readFile(path.join(out, "new\nline.txt"), "utf8"),
      "newline in the name\n",
    );
    assert.equal(await fs.readFile(path.join(out, "dir with space", "a file.txt"), "utf8"), "x\n");
    await assert.rejects(fs.access(path.join(out, "debug.log")));
    await assert.rejects(fs.access(path.join(out, "gone.txt")));
    // The copy is a working repository: same HEAD, and it sees the same changes.
    assert.equal(await gitIn(out, "rev-parse", "HEAD"), await gitIn(repo, "rev-parse", "HEAD"));
    assert.match(await gitIn(out, "status", "--porcelain"), /^ D gone\.txt$/m);

    // A linked worktree (its .git is a file) arrives as a standalone repo on its own branch.
    const fromLinked = await planWorkspace(runner, await findRepo(runner, linked), {
      withWorkTree: true,
    });
    assert.equal(fromLinked.parts.length, 3);
    assert.ok(!fromLinked.parts[2]!.names.includes("gitdir"));
    const out2 = path.join(scratch, "extracted-linked");
    await extractAll(gnuTarSource(fromLinked.parts), out2);
    assert.equal((await gitIn(out2, "symbolic-ref", "HEAD")).trim(), "refs/heads/side");
    assert.equal(await gitIn(out2, "status", "--porcelain"), "");
  } finally {
    await fs.rm(path.join(repo, ".git", "index.lock"), { force: true });
    await gitIn(repo, "worktree", "remove", "--force", linked);
  }
});

test("parts join into one archive whatever their members end with: zero-filled data, long names, hard links", async () => {
  const dir = path.join(scratch, "join");
  const other = path.join(scratch, "join-other");
  const long = `${"l".repeat(120)}/${"n".repeat(120)}.txt`;
  await fs.mkdir(path.join(dir, "l".repeat(120)), { recursive: true });
  await fs.mkdir(other);
  await fs.writeFile(path.join(dir, long), "long\n");
  await fs.writeFile(path.join(dir, "a"), "a\n");
  await fs.link(path.join(dir, "a"), path.join(dir, "hard"));
  // Last in its part: data ending in whole zero blocks must not be taken for the end.
  await fs.writeFile(path.join(dir, "zeros"), Buffer.alloc(64 * 1024));
  await fs.writeFile(path.join(other, "HEAD"), "ref: refs/heads/main\n");
  await fs.writeFile(path.join(other, "zeros"), Buffer.alloc(10 * 1024));
  // A hard link inside a part under a dest: --transform must move its target there too.
  await fs.link(path.join(other, "HEAD"), path.join(other, "ORIG_HEAD"));
  const out = path.join(scratch, "join-out");
  await extractAll(
    gnuTarSource([
      { root: dir, dest: ".", names: ["l".repeat(120), long, "a", "hard", "zeros"] },
      { root: other, dest: ".git", names: ["HEAD", "ORIG_HEAD", "zeros"] },
    ]),
    out,
  );
  for (const tree of [out, `${out}-busybox`]) {
    const [head, orig] = await Promise.all(
      ["HEAD", "ORIG_HEAD"].map((n) => fs.stat(path.join(tree, ".git", n))),
    );
    assert.equal(orig!.ino, head!.ino, `${tree}: .git/ORIG_HEAD is a hard link to .git/HEAD`);
  }
  assert.equal(await fs.readFile(path.join(out, long), "utf8"), "long\n");
  assert.equal(
    (await fs.stat(path.join(out, "hard"))).ino,
    (await fs.stat(path.join(out, "a"))).ino,
  );
  assert.deepEqual(await fs.readFile(path.join(out, "zeros")), Buffer.alloc(64 * 1024));
  assert.deepEqual(await fs.readFile(path.join(out, ".git", "zeros")), Buffer.alloc(10 * 1024));
  assert.equal(await fs.readFile(path.join(out, ".git", "HEAD"), "utf8"), "ref: refs/heads/main\n");
});

test("secrets in .git stay home: the guest gets a scrubbed config, no hooks, no FETCH_HEAD, no modules", async () => {
  const dir = path.join(scratch, "secret-repo");
  await fs.mkdir(dir);
  await gitIn(dir, "init", "-q", "-b", "main");
  await fs.writeFile(path.join(dir, "a.txt"), "a\n");
  await gitIn(dir, "add", "-A");
  await gitIn(dir, "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "a");
  const include = path.join(scratch, "SECRET-included.gitconfig");
  await fs.writeFile(include, "[user]\n\tsigningkey = SECRET-INCLUDED\n");
  const set = (...kv: string[]) => gitIn(dir, "config", "--add", ...kv);
  await set("http.extraheader", "AUTHORIZATION: bearer SECRET-EXTRAHEADER");
  await set("http.https://host.example/.extraheader", "AUTHORIZATION: basic SECRET-SCOPED");
  await set("remote.origin.url", "https://user:SECRET-TOKEN@host.example/repo.git");
  await set("remote.origin.pushurl", "ssh://git:SECRET-PASSWORD@host.example/repo.git");
  await set("remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*");
  await set("remote.origin.uploadpack", "SECRET-UPLOADPACK");
  await set("remote.tok.url", "https://SECRET-ASUSER@host.example/x.git");
  await set("branch.main.remote", "origin");
  await set("branch.main.merge", "refs/heads/main");
  await set("credential.helper", "store --file /tmp/SECRET-HELPER");
  await set("include.path", include);
  await set("core.sshCommand", "ssh -i SECRET-SSHCOMMAND");
  await set("core.fsmonitor", "SECRET-FSMONITOR");
  await set("core.hooksPath", "/tmp/SECRET-HOOKSPATH");
  await set("url.https://SECRET-INSTEADOF@host.example/.insteadOf", "https://host.example/");
  await set("filter.x.process", "SECRET-FILTER");
  await set("user.name", 'a "quoted" \\ name');
  const gitDir = path.join(dir, ".git");
  await fs.writeFile(path.join(gitDir, "hooks", "pre-commit"), "#!/bin/sh\n# SECRET-HOOK\n", {
    mode: 0o755,
  });
  await fs.writeFile(
    path.join(gitDir, "FETCH_HEAD"),
    "0000000000000000000000000000000000000000\t\tbranch 'main' of https://u:SECRET-FETCHHEAD@host.example/repo\n",
  );
  await fs.writeFile(path.join(gitDir, "config.worktree"), "[core]\n\tsshCommand = SECRET-WT\n");
  await fs.writeFile(path.join(gitDir, "credentials"), "https://u:SECRET-STORE@host.example\n");
  await fs.mkdir(path.join(gitDir, "modules", "sub"), { recursive: true });
  await fs.writeFile(path.join(gitDir, "modules", "sub", "config"), "# SECRET-MODULE\n");
  await fs.mkdir(path.join(gitDir, "remotes"));
  await fs.writeFile(path.join(gitDir, "remotes", "old"), "URL: https://u:SECRET-REMOTES@h/\n");

  const plan = await planWorkspace(runner, await findRepo(runner, dir), { withWorkTree: true });
  const command = workspaceRemoteCommand(
    script,
    workspaceImportArgs({ dir: plan.dir, gitConfig: plan.gitConfig }),
  );
  // Everything that crosses to the guest: the command (it carries the config) and the tar stream.
  const source = gnuTarSource(plan.parts);
  const chunks: Buffer[] = [];
  source.stream.on("data", (c: Buffer) => chunks.push(c));
  await source.done;
  const wire = Buffer.concat([Buffer.from(command), ...chunks]).toString("latin1");
  assert.deepEqual(wire.match(/SECRET-[A-Z]+/g) ?? [], [], "secrets on the wire");
  const gitNames = plan.parts[1]!.names;
  for (const gone of ["config", "hooks", "FETCH_HEAD", "modules", "remotes", "credentials"])
    assert.ok(!gitNames.some((n) => n === gone || n.startsWith(`${gone}/`)), gone);

  assert.equal(
    plan.gitConfig,
    [
      "[core]",
      '\trepositoryformatversion = "0"',
      '\tfilemode = "true"',
      '\tlogallrefupdates = "true"',
      '[remote "origin"]',
      '\turl = "https://host.example/repo.git"',
      '\tpushurl = "ssh://git@host.example/repo.git"',
      '\tfetch = "+refs/heads/*:refs/remotes/origin/*"',
      '[remote "tok"]',
      '\turl = "https://host.example/x.git"',
      '[branch "main"]',
      '\tremote = "origin"',
      '\tmerge = "refs/heads/main"',
      "[user]",
      '\tname = "a \\"quoted\\" \\\\ name"',
      "",
    ].join("\n"),
  );
  // What the guest script does: extract, write the config. The copy is a working clone.
  const out = path.join(scratch, "secret-extracted");
  await extractAll(gnuTarSource(plan.parts), out);
  await fs.writeFile(path.join(out, ".git", "config"), plan.gitConfig);
  assert.equal(await gitIn(out, "config", "remote.origin.url"), "https://host.example/repo.git\n");
  assert.equal(await gitIn(out, "config", "user.name"), 'a "quoted" \\ name\n');
  assert.equal(await gitIn(out, "rev-parse", "HEAD"), await gitIn(dir, "rev-parse", "HEAD"));
  assert.equal(await gitIn(out, "status", "--porcelain"), "");
});

/** A sparse file (GNU tar's --sparse makes it an old-style sparse member) and a 3 MB one after it. */
async function sparseThenBig(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  const sparse = await fs.open(path.join(dir, "a-sparse"), "w");
  await sparse.write("start\n", 0);
  await sparse.write("end\n", 8 * 2 ** 20);
  await sparse.close();
  await fs.writeFile(path.join(dir, "b-big"), Buffer.alloc(3 * 10 ** 6, 0x62));
}

/** `p`, or a failure after `ms`: a hang shows as a failed test, not a stuck run. */
async function within<T>(what: string, ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

test("TAR_OPTIONS in the daemon's environment does not change the stream", async () => {
  const dir = path.join(scratch, "sparse-env");
  await sparseThenBig(dir);
  const parts: TarPart[] = [{ root: dir, dest: ".", names: ["a-sparse", "b-big"] }];
  const bytesOf = async () => {
    const source = gnuTarSource(parts);
    const chunks: Buffer[] = [];
    source.stream.on("data", (c: Buffer) => chunks.push(c));
    try {
      await within("the tar source", 120_000, source.done);
    } finally {
      source.kill();
    }
    return Buffer.concat(chunks);
  };
  const plain = await bytesOf();
  process.env.TAR_OPTIONS = "--sparse";
  try {
    assert.deepEqual(await bytesOf(), plain);
    const out = path.join(scratch, "sparse-env-out");
    await extractAll(gnuTarSource(parts), out);
    assert.equal((await fs.stat(path.join(out, "a-sparse"))).size, 8 * 2 ** 20 + 4);
    assert.deepEqual(
      await fs.readFile(path.join(out, "b-big")),
      await fs.readFile(path.join(dir, "b-big")),
    );
  } finally {
    delete process.env.TAR_OPTIONS;
  }
});

test("a part the header walk refuses ends the import at once: tar is killed, the guest side is stopped", async () => {
  // A tar that writes what the walk refuses (old GNU sparse members) and then more than a pipe holds.
  const bin = path.join(scratch, "sparse-tar-bin");
  const pids = path.join(scratch, "sparse-tar.pids");
  await fs.mkdir(bin);
  const realTar = (await exec("sh", ["-c", "command -v tar"])).stdout.trim();
  await fs.writeFile(
    path.join(bin, "tar"),
    `#!/bin/sh\necho $$ >> '${pids}'\nexec '${realTar}' "$@" --sparse\n`,
    { mode: 0o755 },
  );
  const dir = path.join(scratch, "sparse-repo");
  await sparseThenBig(dir);
  await gitIn(dir, "init", "-q", "-b", "main");
  const home = await tempLayout();
  const { store, vms } = await vmFixture(home);
  const savedPath = process.env.PATH;
  process.env.PATH = `${bin}:${savedPath}`;
  try {
    const guest = recordingGuest();
    const ws = new WorkspaceService({ vms, runner, guestExec: guest.exec });
    await assert.rejects(
      within("the import", 120_000, ws.prepare({ name: "ws", path: dir })),
      /tar's output is not what banger expects: a member header that does not check out/,
    );
    const pid = Number((await fs.readFile(pids, "utf8")).trim().split("\n")[0]);
    assert.throws(() => process.kill(pid, 0), { code: "ESRCH" }, "no tar child is left");
    assert.equal(guest.calls.length, 1);
    assert.ok(!guest.calls[0]!.received.includes(COMMIT_MARKER), "no marker after a refusal");
  } finally {
    process.env.PATH = savedPath;
    store.close();
    await home.cleanup();
  }
});

/**
 * What the guest script does with the stream (the commit member added): one `tar -x`, by GNU
 * tar into `into` and by busybox tar (the guest's where the image has none) beside it; both
 * must give the same tree.
 */
async function extractAll(source: ReturnType<TarSourceFactory>, into: string) {
  const chunks: Buffer[] = [];
  source.stream.on("data", (c: Buffer) => chunks.push(c));
  await source.done;
  const stream = Buffer.concat([...chunks, commitTrailer(COMMIT_MEMBER, COMMIT_MARKER)]);
  for (const [tar, dir] of [
    [["tar"], into],
    [["/bin/busybox", "tar"], `${into}-busybox`],
  ] as const) {
    await fs.mkdir(path.join(dir, ".git"), { recursive: true });
    const child = execFile(tar[0], [...tar.slice(1), "-x", "-f", "-", "-o", "-C", dir]);
    child.stdin!.end(stream);
    assert.equal(await new Promise((resolve) => child.on("close", resolve)), 0, tar.join(" "));
    assert.equal(await fs.readFile(path.join(dir, COMMIT_MEMBER), "utf8"), `${COMMIT_MARKER}\n`);
    await fs.rm(path.join(dir, COMMIT_MEMBER));
  }
  await exec("diff", ["-r", "--no-dereference", into, `${into}-busybox`]);
}

test("guest scripts parse, quote odd names, and only swap after the commit marker", async () => {
  await exec("sh", ["-n", "-c", script]);
  const args = workspaceImportArgs({ dir: "/root/it's a repo", branch: "feature/x" });
  const command = workspaceRemoteCommand(script, args);
  await exec("sh", ["-n", "-c", command]);
  // Values are arguments, quoted for the guest's login shell; the script text is sent as is.
  assert.ok(command.includes(` ${shellQuote("/root/it's a repo")} `), command);
  assert.ok(command.startsWith(`sh -c ${shellQuote(script)} banger-workspace import `));
  assert.deepEqual(args.slice(3), ["/root/it's a repo", "", "", "feature/x"]);
  assert.match(script, /g checkout -q -B "\$branch"/);
  assert.ok(
    script.indexOf('[ "$(cat "$commit")" = "$marker" ]') < script.indexOf("  swap_in\n"),
    "the marker is checked before the swap",
  );
  assert.ok(args.includes("BANGER-WORKSPACE-COMMIT"), "the marker travels as an argument");
  assert.ok(
    script.includes(`commit=$tmp/${COMMIT_MEMBER}`),
    "the script looks where the host puts it",
  );
  const from = workspaceImportArgs({ dir: "/root/r", from: "a".repeat(40) });
  await exec("sh", ["-n", "-c", workspaceRemoteCommand(script, from)]);
  assert.deepEqual(from.slice(3), ["/root/r", "", "a".repeat(40), ""]);
  assert.match(script, /checkout -q -f --detach "\$from"/);
  assert.match(script, /base=\$from/);
  for (const nameOnly of [true, false]) {
    const exp = workspaceRemoteCommand(script, workspaceExportArgs({ nameOnly }));
    await exec("sh", ["-n", "-c", exp]);
    assert.ok(exp.endsWith(` export /root/.banger ${nameOnly ? "names" : "patch"}`), exp);
  }
  assert.match(script, /GIT_INDEX_FILE="\$idx" g add -A/);
  assert.match(script, /read-tree -m --index-output="\$idx" HEAD/);
  assert.match(script, /trap 'rm -f "\$idx"/);
});

// ---- locks: a real VmService (real store, KeyedLock) with a fake driver and a stalled import ----

const handles = fakeHandles;

/** ssh poweroff, ssh-keygen: succeed without doing anything. */
const quietRunner: CommandRunner = {
  run: async () => ({ code: 0, signal: null, stdout: "", stderr: "" }),
  which: async (cmd) => `/usr/bin/${cmd}`,
};

async function vmFixture(home: TempLayout) {
  const store = Store.open(home.layout.dbFile);
  const { kernels, images } = imageServices(store, home.layout, { runner: quietRunner });
  const driver = fakeDriver(quietRunner);
  const vms = new VmService({
    store,
    layout: home.layout,
    runner: quietRunner,
    images,
    kernels,
    drivers: { qemu: driver },
    pickVmm: async () => "qemu",
    host: { cpus: 2, memoryBytes: 4 * 2 ** 30 },
  });
  store.insertVm(
    vmRow({
      name: "ws",
      state: "running",
      ip: "10.0.2.15",
      teardownJson: JSON.stringify(handles),
    }),
  );
  return { store, vms, driver };
}

/** A tar source whose imports stall until released, recording when each one starts. */
function stalledImports(events: string[]) {
  const releases: Array<() => void> = [];
  let n = 0;
  const source: TarSourceFactory = () => {
    const id = ++n;
    events.push(`tar${id}:start`);
    const stream = new PassThrough();
    stream.write("some tar bytes");
    const done = new Promise<void>((resolve) => releases.push(resolve)).then(() => {
      stream.end();
    });
    return { stream, done, kill: () => stream.destroy() };
  };
  return { source, release: (i: number) => releases[i]!() };
}

interface GuestCall {
  target: GuestTarget;
  command: string;
  /** Every byte banger sent on the command's stdin so far. */
  received: Buffer;
}

/**
 * The guest: reads the whole stream, then reports a base, as the real script does.
 * It records what banger sent (target, command, stdin): that is what the tests check.
 */
function recordingGuest(): { exec: GuestExec; calls: GuestCall[] } {
  const calls: GuestCall[] = [];
  const exec: GuestExec = async (target, command, opts) => {
    const call: GuestCall = { target, command, received: Buffer.alloc(0) };
    calls.push(call);
    const stdin = opts.stdin as Readable;
    await new Promise<void>((resolve, reject) => {
      stdin.on("data", (c: Buffer) => (call.received = Buffer.concat([call.received, c])));
      stdin.on("end", resolve);
      stdin.on("error", reject);
      opts.signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
    });
    return { code: 0, signal: null, stdout: Buffer.from("base 1234\n"), stderr: "" };
  };
  return { exec, calls };
}

/** The command `prepare` must send for `repo` as it is now: the import script for its plan. */
async function importCommand(dir: string): Promise<string> {
  const plan = await planWorkspace(runner, await findRepo(runner, dir), { withWorkTree: true });
  return workspaceRemoteCommand(
    script,
    workspaceImportArgs({ dir: plan.dir, gitConfig: plan.gitConfig }),
  );
}

const TRAILER = commitTrailer(COMMIT_MEMBER, COMMIT_MARKER);
const MARKED = (bytes: string) => Buffer.concat([Buffer.from(bytes), TRAILER]);

/** Bounded polling: never wait forever for something that should happen. */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail(`timed out waiting for ${what}`);
}

test("a stalled import makes neither stop nor delete wait; a second import waits its turn", async () => {
  const home = await tempLayout();
  const { store, vms, driver } = await vmFixture(home);
  try {
    const expectedCommand = await importCommand(repo);
    const events: string[] = [];
    const imports = stalledImports(events);
    // The real VmService and its locks; this only records when an import asks for the workspace lock.
    const recorded = {
      guestTarget: (name: string) => vms.guestTarget(name),
      exclusive: <T>(kind: string, vmId: string, fn: () => Promise<T>) => {
        events.push(`${kind}:queued`);
        return vms.exclusive(kind, vmId, fn);
      },
    };
    const guest = recordingGuest();
    const workspaces = new WorkspaceService({
      vms: recorded,
      runner,
      tarSource: imports.source,
      guestExec: guest.exec,
    });
    let firstDone = false;
    const first = workspaces.prepare({ name: "ws", path: repo }).finally(() => {
      firstDone = true;
      events.push("prepare1:end");
    });
    await until("the first import to start", () => events.includes("tar1:start"));
    const second = workspaces.prepare({ name: "ws", path: repo });
    second.catch(() => undefined); // checked below; an earlier failure must not hide behind it
    await until(
      "the second import to queue",
      () => events.filter((e) => e === "workspace:queued").length === 2,
    );

    // The lifecycle lock is free: stop completes while the import is still stalled.
    const stopped = await vms.stop("ws");
    assert.equal(stopped.state, "stopped");
    assert.equal(driver.alive, false);
    assert.equal(firstDone, false, "the import is still running");
    assert.ok(!events.includes("tar2:start"), "the second import has not started");

    imports.release(0);
    const r1 = await first;
    // What banger sent: the import script for this repo, to the VM's SSH target, the tar
    // stream then the commit marker; and what it counted itself (files listed, bytes sent).
    assert.equal(guest.calls.length, 1);
    const [call] = guest.calls;
    assert.deepEqual(
      [call!.target.vmId, call!.target.vmName, call!.target.host, call!.target.port],
      ["0123456789ab", "ws", handles.sshHost, handles.sshPort],
    );
    assert.equal(call!.command, expectedCommand);
    assert.deepEqual(call!.received, MARKED("some tar bytes"));
    assert.deepEqual(
      [r1.vm, r1.dir, r1.base, r1.files, r1.bytes],
      ["ws", "/root/my repo", "1234", 9, "some tar bytes".length],
    );
    // The second import's turn came after the stop: it looks at the VM again, and
    // sends nothing to a stopped one (nor to a port from before a restart).
    await assert.rejects(second, /VM ws is not running/);
    assert.ok(!events.includes("tar2:start"), "nothing was sent to the stopped VM");

    // Delete, too, proceeds while an import holds the workspace lock.
    store.updateVm("0123456789ab", { state: "running", teardownJson: JSON.stringify(handles) });
    driver.alive = true;
    const third = workspaces.prepare({ name: "ws", path: repo });
    await until("the third import to start", () => events.includes("tar2:start"));
    assert.deepEqual(await vms.delete(["ws"]), { deleted: ["ws"] });
    assert.equal(store.getVmByName("ws"), null);
    imports.release(1);
    // An import already running when the VM was deleted finishes what it was sending.
    assert.deepEqual((await third).dir, "/root/my repo");
    assert.equal(guest.calls.length, 2);
    assert.deepEqual(guest.calls[1]!.received, MARKED("some tar bytes"));
  } finally {
    store.close();
    await home.cleanup();
  }
});

test("a failing tar source or a cancel stops the guest side and the import fails clearly", async () => {
  const home = await tempLayout();
  const { store, vms } = await vmFixture(home);
  try {
    let killed = 0;
    const failing: TarSourceFactory = () => {
      const stream = new PassThrough();
      stream.write("partial");
      const done = Promise.reject(new Error("tar exited with status 2 while reading x"));
      done.catch(() => undefined);
      return { stream, done, kill: () => void killed++ };
    };
    const guest = recordingGuest();
    const ws = new WorkspaceService({ vms, runner, tarSource: failing, guestExec: guest.exec });
    await assert.rejects(ws.prepare({ name: "ws", path: repo }), /tar exited with status 2/);
    assert.equal(killed, 1, "the source is killed");
    // The guest swaps the workspace in only after the marker: a failed source never sends it.
    assert.equal(guest.calls.length, 1);
    assert.ok(!guest.calls[0]!.received.includes(COMMIT_MARKER), "no marker after a failure");

    const events: string[] = [];
    const imports = stalledImports(events);
    const guest2 = recordingGuest();
    const ws2 = new WorkspaceService({
      vms,
      runner,
      tarSource: imports.source,
      guestExec: guest2.exec,
    });
    const cancel = new AbortController();
    const p = ws2.prepare({ name: "ws", path: repo }, () => {}, cancel.signal);
    await until("the import to start", () => events.includes("tar1:start"));
    cancel.abort();
    await assert.rejects(p, /aborted|cancelled/);
    // The workspace lock is free again.
    const next = ws2.prepare({ name: "ws", path: repo });
    await until("the next import to start", () => events.includes("tar2:start"));
    imports.release(1);
    assert.equal((await next).bytes, "some tar bytes".length);
    // The cancelled import sent no marker; the next one sent its stream whole, marker last.
    assert.equal(guest2.calls.length, 2);
    assert.ok(!guest2.calls[0]!.received.includes(COMMIT_MARKER), "no marker after a cancel");
    assert.deepEqual(guest2.calls[1]!.received, MARKED("some tar bytes"));
  } finally {
    store.close();
    await home.cleanup();
  }
});

test("bad host input fails before the guest is touched", async () => {
  const home = await tempLayout();
  const { store, vms } = await vmFixture(home);
  try {
    let touched = false;
    const ws = new WorkspaceService({
      vms,
      runner,
      tarSource: () => {
        touched = true;
        throw new Error("no import expected");
      },
      guestExec: async () => {
        touched = true;
        throw new Error("no guest I/O expected");
      },
    });
    await assert.rejects(ws.prepare({ name: "ws", path: "relative/path" }), /must be absolute/);
    await assert.rejects(ws.prepare({ name: "ws", path: scratch }), /not inside a git repository/);
    await assert.rejects(
      ws.prepare({ name: "ws", path: repo, from: "nope" }),
      /unknown ref "nope"/,
    );
    await assert.rejects(
      ws.prepare({ name: "ws", path: repo, branch: "a..b" }),
      /invalid branch name/,
    );
    await assert.rejects(ws.prepare({ name: "ghost", path: repo }), /no VM named "ghost"/);
    assert.equal(touched, false);
  } finally {
    store.close();
    await home.cleanup();
  }
});

test("a guest without git: prepare reports no base; --from there fails with what to do", async () => {
  const home = await tempLayout();
  const { store, vms } = await vmFixture(home);
  try {
    const source: TarSourceFactory = () => {
      const stream = new PassThrough();
      stream.end("some tar bytes");
      return { stream, done: Promise.resolve(), kill: () => stream.destroy() };
    };
    const noGit: GuestExec = async (_target, _command, opts) => {
      for await (const c of opts.stdin as Readable) void c;
      return { code: 0, signal: null, stdout: Buffer.from("files 0\nno-git\n"), stderr: "" };
    };
    const ws = new WorkspaceService({ vms, runner, tarSource: source, guestExec: noGit });
    const r = await ws.prepare({ name: "ws", path: repo });
    assert.equal(r.base, null);
    assert.equal(r.dir, "/root/my repo");

    // workspace.sh exits NoGit before reading anything when --from/--branch need git.
    const refuses: GuestExec = async () => ({
      code: GuestStatus.NoGit,
      signal: null,
      stdout: Buffer.alloc(0),
      stderr:
        "banger: checking out --from or --branch needs git, which is not installed in the guest\n",
    });
    const ws2 = new WorkspaceService({ vms, runner, tarSource: source, guestExec: refuses });
    await assert.rejects(
      ws2.prepare({ name: "ws", path: repo, branch: "fix" }),
      (err: Error) =>
        /--from and --branch check a commit out in the guest, and VM ws has no git; nothing was changed/.test(
          err.message,
        ) && /leave them out/.test((err as BangerError).hint ?? ""),
    );
    assert.match(
      exportError("ws", { code: GuestStatus.NoGit, signal: null, stderr: "" }).hint ?? "",
      /default debian-bookworm image has it.*Dockerfile/,
    );
  } finally {
    store.close();
    await home.cleanup();
  }
});

test("a large import reaches the guest whole, marker last, even when tar finishes before the guest reads", async () => {
  // Regression: the commit marker was written as soon as every tar had exited, while
  // their output still sat in the stream's buffer; a 40 MiB repo arrived cut short.
  const home = await tempLayout();
  const { store, vms } = await vmFixture(home);
  try {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const total = 16 * 2 ** 20;
    const source: TarSourceFactory = () => {
      const stream = new PassThrough();
      for (let sent = 0; sent < total; sent += chunk.length) stream.write(chunk);
      stream.end();
      return { stream, done: Promise.resolve(), kill: () => stream.destroy() };
    };
    let received = Buffer.alloc(0);
    const slowGuest: GuestExec = async (_target, _command, opts) => {
      const parts: Buffer[] = [];
      for await (const c of opts.stdin as Readable) {
        parts.push(c as Buffer);
        await new Promise((r) => setImmediate(r)); // a guest slower than the host
      }
      received = Buffer.concat(parts);
      return { code: 0, signal: null, stdout: Buffer.from("base 1234\n"), stderr: "" };
    };
    const ws = new WorkspaceService({ vms, runner, tarSource: source, guestExec: slowGuest });
    assert.equal((await ws.prepare({ name: "ws", path: repo })).bytes, total);
    assert.equal(received.length, total + TRAILER.length);
    assert.deepEqual(received.subarray(total), TRAILER);
    assert.ok(received.subarray(0, total).every((b) => b === 0x61));
  } finally {
    store.close();
    await home.cleanup();
  }
});
