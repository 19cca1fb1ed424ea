import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { completeWords } from "../src/cli/completion.js";
import { buildProgram } from "../src/cli/program.js";
import { referenceDeps } from "../src/cli/reference.js";

const run = promisify(execFile);

async function complete(words: string[]): Promise<string[]> {
  const deps = referenceDeps();
  return completeWords(await buildProgram(deps), words, deps);
}

test("completes groups, subcommands, aliases' targets and options", async () => {
  assert.deepEqual(await complete(["v"]), ["version", "vm"]);
  assert.deepEqual(await complete(["vm", "st"]), ["start", "stats", "stop"]);
  assert.deepEqual(await complete(["image", "cache", ""]), ["prune"]);
  assert.ok((await complete(["vm", "ls", "--"])).includes("--json"));
  assert.deepEqual(await complete(["kernel", "list", "--a"]), ["--available"]);
  assert.deepEqual(await complete(["completion", ""]), ["bash", "fish", "zsh"]);
  // No daemon running: names cannot be offered, and none is started.
  assert.deepEqual(await complete(["vm", "ssh", ""]), []);
});

test("hidden commands are not offered", async () => {
  assert.equal((await complete([""])).includes("__complete"), false);
});

test("the bash script completes through the real CLI", async (t) => {
  const bash = await run("sh", ["-c", "command -v bash"]).catch(() => null);
  if (!bash) return t.skip("bash is not installed");
  // A stand-in `banger` on PATH that runs this checkout's CLI through tsx.
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-compl-"));
  try {
    const root = path.resolve(new URL("..", import.meta.url).pathname);
    const shim = path.join(dir, "banger");
    await fs.writeFile(
      shim,
      `#!/bin/sh\nexec node --import tsx -e 'import("${root}/src/cli/main.ts").then(m => m.main())' banger "$@"\n`,
      { mode: 0o755 },
    );
    const script = `eval "$(banger completion bash)"; COMP_WORDS=(banger vm re); COMP_CWORD=2; _banger; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const { stdout } = await run("bash", ["-c", script], {
      cwd: root,
      env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, BANGER_HOME: dir },
      timeout: 60_000,
    });
    assert.deepEqual(stdout.trim().split("\n"), ["restart"]);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
