import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { GUEST_SAFE_SSH_OPTIONS, guestSshEnv, withoutAgent } from "../src/guest/ssh.js";
import { bangerSshConfig, withBlock } from "../src/guest/ssh-config.js";
import { effectiveSsh, sshBuilders } from "./helpers/ssh-effective.js";

let dir: string;
let hostile: string;
const marker = () => path.join(dir, "local-command-ran");
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-sshopts-"));
  hostile = path.join(dir, "config");
  await fs.writeFile(
    hostile,
    [
      "Host *",
      "  ForwardAgent yes",
      "  ForwardX11 yes",
      "  PermitLocalCommand yes",
      `  LocalCommand touch ${marker()}`,
      "  ControlMaster auto",
      `  ControlPath ${dir}/cm-%r@%h:%p`,
      "  ControlPersist yes",
      "  LocalForward 8080 127.0.0.1:80",
      "  Compression yes",
      // As Debian's /etc/ssh/ssh_config sets it: banger's own known_hosts stays in clear.
      "  HashKnownHosts yes",
      "",
    ].join("\n"),
  );
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

test("every daemon-side ssh argv starts with -F /dev/null and carries banger's options", () => {
  for (const [name, build] of Object.entries(sshBuilders)) {
    const args = build();
    const daemonSide = name.startsWith("daemon");
    assert.equal(args[0] === "-F" && args[1] === "/dev/null", daemonSide, name);
    for (const o of [
      "ForwardAgent=no",
      "ForwardX11=no",
      "ClearAllForwardings=yes",
      "PermitLocalCommand=no",
      "ControlPath=none",
      "ControlMaster=no",
    ]) {
      assert.ok(GUEST_SAFE_SSH_OPTIONS.includes(o), o);
      const i = args.indexOf(o);
      assert.ok(i > 0 && args[i - 1] === "-o", `${name}: -o ${o}`);
    }
  }
});

test("a hostile ~/.ssh/config does not take effect for banger's ssh (ssh -G)", async () => {
  for (const [name, build] of Object.entries(sshBuilders)) {
    const eff = await effectiveSsh(build(), hostile);
    assert.deepEqual(eff.get("forwardagent"), ["no"], name);
    assert.deepEqual(eff.get("forwardx11"), ["no"], name);
    assert.deepEqual(eff.get("permitlocalcommand"), ["no"], name);
    assert.equal(eff.get("localcommand"), undefined, name);
    assert.deepEqual(eff.get("controlmaster"), ["false"], name);
    assert.equal(eff.get("controlpath"), undefined, name);
    assert.deepEqual(eff.get("controlpersist"), ["no"], name);
    assert.deepEqual(eff.get("clearallforwardings"), ["yes"], name);
    assert.deepEqual(eff.get("identityagent"), ["none"], name);
    assert.deepEqual(eff.get("hashknownhosts"), ["no"], name);
    // The daemon reads no config at all; the CLI keeps the user's harmless settings.
    assert.deepEqual(eff.get("compression"), [name.startsWith("daemon") ? "no" : "yes"], name);
  }
  await assert.rejects(fs.access(marker()), "LocalCommand never ran");
});

test("banger's Host *.vm block wins over a hostile Host * below it", async () => {
  const bangerFile = path.join(dir, "banger-ssh-config");
  await fs.writeFile(
    bangerFile,
    bangerSshConfig({ bangerBin: "/b/banger", identityFile: "/s/id", knownHostsFile: "/s/kh" }),
  );
  const user = path.join(dir, "user-config");
  await fs.writeFile(user, withBlock(await fs.readFile(hostile, "utf8"), bangerFile));
  const eff = await effectiveSsh(["box.vm"], user);
  assert.deepEqual(eff.get("forwardagent"), ["no"]);
  assert.deepEqual(eff.get("forwardx11"), ["no"]);
  assert.deepEqual(eff.get("permitlocalcommand"), ["no"]);
  assert.deepEqual(eff.get("controlmaster"), ["false"]);
  assert.equal(eff.get("controlpath"), undefined);
  assert.deepEqual(eff.get("clearallforwardings"), ["yes"]);
  assert.deepEqual(eff.get("proxycommand"), ["/b/banger internal ssh-proxy %h"]);
  assert.deepEqual(eff.get("hashknownhosts"), ["no"]);
});

test("the daemon never gets the agent; the CLI's ssh gets no secrets SendEnv could send", () => {
  const env = {
    PATH: "/bin",
    HOME: "/h",
    SSH_AUTH_SOCK: "/a",
    SSH_AGENT_PID: "1",
    AWS_SECRET: "s",
  };
  assert.deepEqual(withoutAgent(env), { PATH: "/bin", HOME: "/h", AWS_SECRET: "s" });
  const cli = guestSshEnv({ ...env, LANG: "C.UTF-8", LC_ALL: "C", TERM: "xterm" });
  assert.deepEqual(Object.keys(cli).sort(), ["HOME", "LANG", "LC_ALL", "PATH", "TERM"]);
});

test("the daemon's code builds its ssh argv only with the -F /dev/null builders", async () => {
  // A daemon-side call that used the CLI's builder would read the user's ~/.ssh/config.
  const root = new URL("../src/", import.meta.url);
  for (const dir of ["daemon", "guest"]) {
    for (const file of await fs.readdir(new URL(`${dir}/`, root))) {
      if (!file.endsWith(".ts") || file === "ssh.ts") continue;
      const text = await fs.readFile(new URL(`${dir}/${file}`, root), "utf8");
      assert.doesNotMatch(text, /[^A-Za-z]sshOptions\(|endpointSshArgs\(/, `${dir}/${file}`);
    }
  }
});

test("options newer than old OpenSSH releases are named in IgnoreUnknown before they appear", () => {
  // OpenSSH < 8.5 refuses to run on an unknown -o keyword: KnownHostsCommand (8.5), SetEnv (7.8).
  const first = GUEST_SAFE_SSH_OPTIONS[0] ?? "";
  assert.match(first, /^IgnoreUnknown=/);
  const ignored = first.slice("IgnoreUnknown=".length).split(",");
  for (const keyword of ["KnownHostsCommand", "SetEnv"]) {
    assert.ok(
      GUEST_SAFE_SSH_OPTIONS.some((o) => o.startsWith(`${keyword}=`)),
      `${keyword} is no longer used: drop it from IgnoreUnknown`,
    );
    assert.ok(ignored.includes(keyword), `${keyword} must be in IgnoreUnknown`);
  }
});
