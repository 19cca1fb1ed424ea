import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { loadGuestScripts, scriptArgv } from "../src/guest/scripts.js";
import {
  COMMIT_MARKER,
  COMMIT_MEMBER,
  GuestStatus,
  WORKSPACE_SCRIPT_NAME,
  workspaceExportArgs,
  workspaceImportArgs,
  type ImportOptions,
} from "../src/guest/workspace.js";
import { createCommandRunner } from "../src/system/runner.js";
import { planWorkspace } from "../src/workspace/plan.js";
import { findRepo } from "../src/workspace/repo.js";
import { commitTrailer, gnuTarSource } from "../src/workspace/stream.js";
import { runScript as runArgv, type ScriptRun as Run } from "./helpers/run-script.js";

// guest-scripts/workspace.sh run by the host's dash with real git and tar, against a temp dir
// standing in for /root/.banger (the state dir is an argument) and a temp workspace dir.
const exec = promisify(execFile);
const runner = createCommandRunner();
const { workspace: script } = loadGuestScripts();
let scratch: string;
let repo: string;
/** dash by its full path: one test runs the script with a PATH that has no git. */
let dash: string;
/** A guest with no git and nothing but busybox: busybox's sh, and its applets alone on PATH. */
let busyboxGuest: { shell: string[]; env: NodeJS.ProcessEnv };

function runScript(
  args: string[],
  input?: Buffer,
  env = process.env,
  shell: string[] = [dash],
): Promise<Run> {
  return runArgv(scriptArgv(shell, script, WORKSPACE_SCRIPT_NAME, args), input, env);
}

/** The import of `repo` into `dir`, its stream ending with the commit member unless `marked` is false. */
async function importRepo(
  state: string,
  dir: string,
  opts: Partial<ImportOptions> & { marked?: boolean; guest?: typeof busyboxGuest } = {},
): Promise<Run> {
  const withWorkTree = opts.from === undefined;
  const plan = await planWorkspace(runner, await findRepo(runner, repo), { withWorkTree });
  const source = gnuTarSource(plan.parts);
  const chunks: Buffer[] = [];
  source.stream.on("data", (c: Buffer) => chunks.push(c));
  await source.done;
  if (opts.marked !== false) chunks.push(commitTrailer(COMMIT_MEMBER, COMMIT_MARKER));
  const args = workspaceImportArgs(
    {
      dir,
      gitConfig: plan.gitConfig,
      from: opts.from,
      branch: opts.branch,
    },
    state,
  );
  const input = Buffer.concat(chunks);
  if (opts.guest) return runScript(args, input, opts.guest.env, opts.guest.shell);
  return runScript(args, input);
}

before(async () => {
  dash = (await exec("sh", ["-c", "command -v dash"])).stdout.trim();
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), "banger-ws-script-"));
  repo = path.join(scratch, "repo");
  await fs.mkdir(repo);
  const git = (...args: string[]) => exec("git", ["-C", repo, ...args]);
  await git("init", "-q", "-b", "main");
  await git("config", "user.email", "t@example.com");
  await git("config", "user.name", "t");
  await fs.writeFile(path.join(repo, "a.txt"), "one\n");
  await git("add", "-A");
  await git("commit", "-qm", "init");
  await fs.writeFile(path.join(repo, "untracked.txt"), "new\n");
  // Debian's busybox runs no applet from PATH by itself: a link per applet, as the toolkit has.
  const bin = path.join(scratch, "busybox-bin");
  await fs.mkdir(bin);
  const applets = (await exec("/bin/busybox", ["--list"])).stdout.split("\n").filter(Boolean);
  for (const applet of applets) await fs.symlink("/bin/busybox", path.join(bin, applet));
  busyboxGuest = { shell: ["/bin/busybox", "sh"], env: { PATH: bin, HOME: scratch } };
});

after(async () => {
  await fs.rm(scratch, { recursive: true, force: true });
});

test("import swaps the workspace in and records it; export prints dir, base and the changes", async () => {
  const state = path.join(scratch, "state-1");
  const dir = path.join(scratch, "guest", "it's a repo");
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const r = await importRepo(state, dir);
  assert.equal(r.code, 0, r.stderr);
  const base = /^base ([0-9a-f]{40})$/m.exec(r.stdout.toString())?.[1];
  assert.ok(base, r.stdout.toString());
  assert.equal(await fs.readFile(path.join(state, "workspace"), "utf8"), `${dir}\n`);
  assert.equal(await fs.readFile(path.join(dir, ".git", "banger", "base"), "utf8"), `${base}\n`);
  assert.equal(await fs.readFile(path.join(dir, "untracked.txt"), "utf8"), "new\n");
  assert.deepEqual(
    (await fs.readdir(state)).filter((n) => n.startsWith("workspace-")),
    [],
    "no temp dirs left",
  );

  await fs.writeFile(path.join(dir, "a.txt"), "two\n");
  const patch = await runScript(workspaceExportArgs({ nameOnly: false }, state));
  assert.equal(patch.code, 0, patch.stderr);
  const [shownDir, shownBase, ...rest] = patch.stdout.toString().split("\n");
  assert.equal(shownDir, dir);
  assert.equal(shownBase, base);
  assert.match(rest.join("\n"), /^-one\n\+two$/m);
  const names = await runScript(workspaceExportArgs({ nameOnly: true }, state));
  assert.equal(names.code, 0, names.stderr);
  assert.equal(names.stdout.toString().split("\n").slice(2).join("\n"), "a.txt\0");
});

test("a stream without the commit marker changes nothing and exits Incomplete", async () => {
  const state = path.join(scratch, "state-2");
  const dir = path.join(scratch, "guest", "kept");
  await fs.mkdir(path.dirname(dir), { recursive: true });
  assert.equal((await importRepo(state, dir)).code, 0);
  await fs.writeFile(path.join(dir, "mine.txt"), "made in the guest\n");
  const r = await importRepo(state, dir, { marked: false });
  assert.equal(r.code, GuestStatus.Incomplete, r.stderr);
  assert.match(r.stderr, /the import stream ended early/);
  assert.equal(await fs.readFile(path.join(dir, "mine.txt"), "utf8"), "made in the guest\n");
  assert.deepEqual(
    (await fs.readdir(state)).filter((n) => n.startsWith("workspace-")),
    [],
    "the temp dir is removed",
  );
});

test("--branch and --from arrive as arguments: the guest checks them out", async () => {
  const head = (await exec("git", ["-C", repo, "rev-parse", "HEAD"])).stdout.trim();
  const state = path.join(scratch, "state-3");
  const dir = path.join(scratch, "guest", "branched");
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const r = await importRepo(state, dir, { branch: "feature/x" });
  assert.equal(r.code, 0, r.stderr);
  const ref = await exec("git", ["-C", dir, "symbolic-ref", "HEAD"]);
  assert.equal(ref.stdout.trim(), "refs/heads/feature/x");

  const from = await importRepo(state, dir, { from: head });
  assert.equal(from.code, 0, from.stderr);
  assert.match(from.stdout.toString(), /^files 1$/m);
  assert.match(from.stdout.toString(), new RegExp(`^base ${head}$`, "m"));
});

test("the script's own exit statuses are the ones GuestStatus names", async () => {
  const empty = path.join(scratch, "state-empty");
  const none = await runScript(workspaceExportArgs({ nameOnly: false }, empty));
  assert.equal(none.code, GuestStatus.NoWorkspace, none.stderr);
  assert.match(none.stderr, /no workspace has been prepared/);

  const noPath = path.join(scratch, "empty-path");
  await fs.mkdir(noPath, { recursive: true });
  const noGit = await runScript(workspaceExportArgs({ nameOnly: false }, empty), undefined, {
    ...process.env,
    PATH: noPath,
  });
  assert.equal(noGit.code, GuestStatus.NoGit, noGit.stderr);
  assert.match(noGit.stderr, /workspace export needs git, which is not installed in the guest/);
});

test("without git in the guest, import extracts the tree with busybox tar and records no base", async () => {
  const state = path.join(scratch, "state-nogit");
  const dir = path.join(scratch, "guest", "no git");
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const r = await importRepo(state, dir, { guest: busyboxGuest });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout.toString(), /^no-git$/m);
  assert.doesNotMatch(r.stdout.toString(), /^base /m);
  assert.equal(await fs.readFile(path.join(dir, "a.txt"), "utf8"), "one\n");
  assert.equal(await fs.readFile(path.join(dir, "untracked.txt"), "utf8"), "new\n");
  assert.equal(await fs.readFile(path.join(state, "workspace"), "utf8"), `${dir}\n`);
  await assert.rejects(fs.stat(path.join(dir, COMMIT_MEMBER)), "the commit member is removed");
  await assert.rejects(fs.stat(path.join(dir, ".git", "banger", "base")), "no base recorded");
  // The .git that arrived is a working clone once git is there (the host's git reads it).
  const head = (await exec("git", ["-C", repo, "rev-parse", "HEAD"])).stdout;
  assert.equal((await exec("git", ["-C", dir, "rev-parse", "HEAD"])).stdout, head);
  assert.equal(
    (await exec("git", ["-C", dir, "status", "--porcelain"])).stdout,
    "?? untracked.txt\n",
  );
  assert.deepEqual(
    (await fs.readdir(state)).filter((n) => n.startsWith("workspace-")),
    [],
    "no temp dirs left",
  );

  // A cut stream changes nothing, with busybox tar too.
  await fs.writeFile(path.join(dir, "mine.txt"), "made in the guest\n");
  const cut = await importRepo(state, dir, { guest: busyboxGuest, marked: false });
  assert.equal(cut.code, GuestStatus.Incomplete, cut.stderr);
  assert.equal(await fs.readFile(path.join(dir, "mine.txt"), "utf8"), "made in the guest\n");

  // Export needs git: it says so before anything else. With git it finds no base and says why.
  const exp = await runScript(
    workspaceExportArgs({ nameOnly: false }, state),
    undefined,
    busyboxGuest.env,
    busyboxGuest.shell,
  );
  assert.equal(exp.code, GuestStatus.NoGit, exp.stderr);
  assert.match(exp.stderr, /workspace export needs git, which is not installed in the guest/);
  const later = await runScript(workspaceExportArgs({ nameOnly: false }, state));
  assert.equal(later.code, GuestStatus.NoWorkspace, later.stderr);
  assert.match(later.stderr, /prepared while the guest had no git.*prepare it again/);
});

test("without git in the guest, --from and --branch fail before anything is read or changed", async () => {
  const head = (await exec("git", ["-C", repo, "rev-parse", "HEAD"])).stdout.trim();
  for (const opts of [{ from: head }, { branch: "fix" }]) {
    const state = path.join(scratch, "state-nogit-checkout");
    const r = await importRepo(state, path.join(scratch, "guest", "never"), {
      ...opts,
      guest: busyboxGuest,
    });
    assert.equal(r.code, GuestStatus.NoGit, r.stderr);
    assert.match(r.stderr, /checking out --from or --branch needs git/);
    await assert.rejects(fs.stat(state), "the state dir was not even made");
    await assert.rejects(fs.stat(path.join(scratch, "guest", "never")));
  }
});
