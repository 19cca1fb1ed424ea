import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import {
  BLOCK_END,
  BLOCK_START,
  bangerSshConfig,
  installSshConfig,
  uninstallSshConfig,
  withBlock,
  withoutBlock,
} from "../src/guest/ssh-config.js";

test("the managed block goes first, replaces itself, and leaves the rest alone", () => {
  const user = "Host work\n  User me\n";
  const once = withBlock(user, "/s/ssh/config");
  assert.ok(once.startsWith(`${BLOCK_START}\nInclude /s/ssh/config\n${BLOCK_END}\n`));
  assert.ok(once.endsWith(user));
  assert.equal(withBlock(once, "/s/ssh/config"), once, "idempotent");
  assert.equal(withoutBlock(once), user);
  assert.equal(withoutBlock(user), user);
  assert.equal(withBlock("", "/x"), `${BLOCK_START}\nInclude /x\n${BLOCK_END}\n`);
});

test("banger's config routes *.vm through banger with its own key and known_hosts", () => {
  const text = bangerSshConfig({
    bangerBin: "/opt/banger/bin/banger",
    identityFile: "/s/id",
    knownHostsFile: "/s/kh",
  });
  assert.match(text, /^Host \*\.vm$/m);
  assert.match(text, /^ {2}User root$/m);
  assert.match(text, /^ {2}IdentityFile \/s\/id$/m);
  assert.match(text, /^ {2}UserKnownHostsFile \/s\/kh$/m);
  assert.match(text, /^ {2}ProxyCommand \/opt\/banger\/bin\/banger internal ssh-proxy %h$/m);
});

test("install and uninstall edit ~/.ssh/config in place, keeping the user's lines", async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-sshcfg-"));
  try {
    const sshDir = path.join(dir, ".ssh");
    await fs.mkdir(sshDir);
    await fs.writeFile(path.join(sshDir, "config"), "Host work\n  User me\n");
    const bangerFile = path.join(dir, "state", "ssh", "config");
    await installSshConfig(sshDir, bangerFile, "Host *.vm\n");
    await installSshConfig(sshDir, bangerFile, "Host *.vm\n");
    const installed = await fs.readFile(path.join(sshDir, "config"), "utf8");
    assert.equal(installed.split(BLOCK_START).length, 2, "one block");
    assert.equal(await fs.readFile(bangerFile, "utf8"), "Host *.vm\n");
    assert.equal(await uninstallSshConfig(sshDir), true);
    assert.equal(await fs.readFile(path.join(sshDir, "config"), "utf8"), "Host work\n  User me\n");
    assert.equal(await uninstallSshConfig(sshDir), false);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});
