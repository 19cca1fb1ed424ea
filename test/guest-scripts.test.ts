import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { GUEST_SCRIPT_FILES, GUEST_SCRIPTS_DIR, loadGuestScripts } from "../src/guest/scripts.js";

/** Run by banger's busybox under /usr/lib/banger/ (injected there, or sent): the image may have no shell. */
const TOOLKIT_RUN = new Set([
  "networkSetup",
  "firstBoot",
  "init",
  "sshServer",
  "loginShell",
  "imageEnv",
  "identity",
]);

const exec = promisify(execFile);

test("guest-scripts/ holds exactly the scripts banger loads, and each parses under dash and busybox sh", async () => {
  const onDisk = (await fs.readdir(GUEST_SCRIPTS_DIR)).sort();
  assert.deepEqual(onDisk, Object.values(GUEST_SCRIPT_FILES).sort());
  const scripts = loadGuestScripts();
  for (const [key, file] of Object.entries(GUEST_SCRIPT_FILES)) {
    const text = scripts[key as keyof typeof GUEST_SCRIPT_FILES];
    assert.equal(text, await fs.readFile(path.join(GUEST_SCRIPTS_DIR, file), "utf8"), file);
    if (TOOLKIT_RUN.has(key))
      assert.match(text, /^#!\/usr\/lib\/banger\/bin\/sh\n/, `${file} starts with banger's shell`);
    else assert.match(text, /^#!\/bin\/(busybox )?sh\n/, `${file} starts with its shell`);
    for (const shell of [["dash"], ["busybox", "sh"]])
      await exec(shell[0]!, [...shell.slice(1), "-n", path.join(GUEST_SCRIPTS_DIR, file)]);
  }
});

test("a missing script fails with what to fix, not a bare ENOENT", () => {
  assert.throws(
    () => loadGuestScripts("/nonexistent/guest-scripts"),
    /cannot read banger's guest script .*network-setup\.sh.*/,
  );
});
