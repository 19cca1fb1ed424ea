// A hostile guest's output against the real bangerd and the real CLI: floods on stdout and
// stderr for every call that reads a guest, endless lines, output then a hang, and terminal
// control sequences in everything banger prints. The guest is a fake `ssh` on PATH (the only
// fake): it answers each call with what the current row asks for.
import assert from "node:assert/strict";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { Store } from "../../src/store/store.js";
import type { VmHandles } from "../../src/vmm/driver.js";
import { bangerCli, type CliResult } from "../helpers/cli.js";
import { hostileDaemon, runTable, type HostileDaemon, type HostileRow } from "./harness.js";
import { vmRow } from "../helpers/vm-row.js";

const exec = promisify(execFile);
const VM = "hostile";

// Answers from files the row writes (in the dir above its bin/): mode, out, err, code. Every process it leaves running
// names the fake's dir, so the harness's process check sees a stray one.
const FAKE_SSH = `#!/bin/sh
# Its own dir, not an environment variable: banger gives CLI-side ssh a minimal environment.
d=$(dirname "$(dirname "$0")")
case $(cat "$d/mode") in
flood-out) exec head -c 600000000 "$d/zero" ;;
flood-err) exec head -c 600000000 "$d/zero" 1>&2 ;;
endless-out) exec yes "$d" ;;
endless-err) exec yes "$d" 1>&2 ;;
flood-hang) head -c 600000000 "$d/zero"; exec tail -n 0 -f "$d/out" ;;
hang) cat "$d/out"; exec tail -n 0 -f "$d/out" ;;
reply) cat "$d/out"; cat "$d/err" >&2; exit "$(cat "$d/code")" ;;
esac
exit 255
`;

type Mode = "flood-out" | "flood-err" | "endless-out" | "endless-err" | "flood-hang" | "hang";

interface Guest {
  /** What the fake guest does. */
  mode: Mode | "reply";
  out?: string | Buffer;
  err?: string | Buffer;
  code?: number;
}

interface Input {
  guest: Guest;
  /** banger's arguments; "RPC:<method>" calls the daemon directly. */
  args: string[];
  /** Text that must appear in what banger printed (escaped forms of the hostile bytes). */
  shows?: RegExp;
  /** Raw streams (session logs) are the guest's own bytes by design: not checked for escapes. */
  raw?: boolean;
}

let daemon: HostileDaemon;
let fake: string;
let vmm: ChildProcess;
let repo: string;

before(async () => {
  fake = await fs.mkdtemp(path.join(os.tmpdir(), "banger-fake-guest-"));
  await fs.mkdir(path.join(fake, "bin"));
  await fs.writeFile(path.join(fake, "bin", "ssh"), FAKE_SSH, { mode: 0o755 });
  await fs.symlink("/dev/zero", path.join(fake, "zero"));
  // A private temp dir: the leftover check then sees this file's temp files, not those of
  // other test runs on the machine.
  await fs.mkdir(path.join(fake, "tmp"));
  process.env.TMPDIR = path.join(fake, "tmp");
  daemon = await hostileDaemon({
    TMPDIR: path.join(fake, "tmp"),
    PATH: `${path.join(fake, "bin")}:${process.env.PATH ?? ""}`,
  });
  // A VM the daemon believes runs: a row whose VMM is a process with qemu's name and socket.
  const controlSocket = path.join(fake, "qmp.sock");
  vmm = spawn(
    process.execPath,
    ["-e", "setInterval(() => {}, 1 << 30)", "qemu-system", controlSocket],
    {
      stdio: "ignore",
    },
  );
  const handles: VmHandles = {
    vmm: "qemu",
    pid: vmm.pid!,
    controlSocket,
    consoleLog: path.join(fake, "console.log"),
    sshHost: "127.0.0.1",
    sshPort: 1,
    tap: null,
  };
  const store = Store.open(daemon.home.layout.dbFile);
  store.insertVm(
    vmRow({
      name: VM,
      state: "running",
      ip: "10.0.2.15",
      teardownJson: JSON.stringify(handles),
    }),
  );
  store.close();
  repo = path.join(fake, "repo");
  await fs.mkdir(repo);
  await exec("git", ["-C", repo, "init", "-q"]);
  await fs.writeFile(path.join(repo, "a.txt"), "a\n");
  // Warm-up: the daemon makes its SSH key on first use, which is not a row's leftover.
  await guestSays({ mode: "reply", out: "", code: 0 });
  await cli("vm", "health", VM);
});

after(async () => {
  await daemon?.close();
  vmm?.kill("SIGKILL");
  await fs.rm(fake, { recursive: true, force: true });
});

const { cli } = bangerCli(() => daemon.env);

async function guestSays(g: Guest): Promise<void> {
  await fs.writeFile(path.join(fake, "out"), g.out ?? "");
  await fs.writeFile(path.join(fake, "err"), g.err ?? "");
  await fs.writeFile(path.join(fake, "code"), String(g.code ?? 0));
  await fs.writeFile(path.join(fake, "mode"), g.mode);
}

// What a terminal would obey: C0 but newline and tab, DEL, C1 (as UTF-8 text).
const RAW_CONTROL = /[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]/;

async function attempt(input: Input, row: HostileRow<Input>): Promise<void> {
  await guestSays(input.guest);
  const [first, ...rest] = input.args;
  if (first?.startsWith("RPC:")) {
    const client = await daemon.connect();
    try {
      await client.call(first.slice(4) as "vm.workspace.export", {
        name: VM,
        ...(rest[0] ? JSON.parse(rest[0]) : {}),
      });
      return;
    } finally {
      client.close();
    }
  }
  const r: CliResult = await cli(...input.args);
  const printed = `${r.stdout}\n${r.stderr}`;
  if (!input.raw)
    assert.doesNotMatch(
      printed,
      RAW_CONTROL,
      `${row.name}: raw control characters reached the terminal: ${JSON.stringify(printed.slice(0, 300))}`,
    );
  if (input.shows)
    assert.match(printed, input.shows, `${row.name}: ${JSON.stringify(printed.slice(0, 300))}`);
  if (r.code !== 0) throw new Error(r.stderr.replace(/^banger: error: /, "") || r.stdout);
}

const OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07";
const TITLE = "\x1b]0;pwned\x07";
const CLEAR = "\x1b[2J\x1b[H";
const CSI_C1 = "\u009b31m";
const TOO_LARGE = /guest output too large/;

/** A session record as the guest script prints it (tab-separated). */
const rec = (name: string, cmd = "sleep 1", cwd = "/root", pid = "42", state = "running") =>
  `${name}\t${state}\t${pid}\t\t2025-01-01T00:00:00Z\t${cwd}\t${cmd}\n`;
const ss = (local: string, proc: string) =>
  `tcp   LISTEN 0      128    ${local}      0.0.0.0:*    users:(("${proc}",pid=1,fd=3))\n`;
const exportOut = (body: string | Buffer) =>
  Buffer.concat([Buffer.from("/root/repo\nabc\n"), Buffer.from(body)]);

const flood = (mode: Mode, args: string[], expect: RegExp = TOO_LARGE): HostileRow<Input> => ({
  name: `${mode}: ${args.join(" ")}`,
  input: { guest: { mode }, args },
  expect,
});

const rows: Array<HostileRow<Input>> = [
  // Floods: the call fails clearly, the daemon stays up, nothing is left.
  flood("flood-out", ["vm", "session", "list", VM]),
  flood("flood-err", ["vm", "session", "list", VM]),
  flood("flood-out", ["vm", "session", "show", VM, "web"]),
  flood("flood-out", ["vm", "session", "start", VM, "web", "--", "sleep", "1"]),
  flood("flood-out", ["vm", "session", "stop", VM, "web"]),
  flood("flood-out", ["vm", "session", "kill", VM, "web"]),
  flood("flood-out", ["vm", "session", "send", VM, "web", "hi"]),
  {
    ...flood("flood-out", ["vm", "session", "logs", VM, "web"]),
    input: { guest: { mode: "flood-out" }, args: ["vm", "session", "logs", VM, "web"], raw: true },
  },
  flood("flood-err", ["vm", "session", "logs", VM, "web"]),
  flood("flood-out", ["vm", "ports", VM]),
  flood("flood-err", ["vm", "ports", VM]),
  flood("flood-out", ["vm", "health", VM]),
  flood("flood-err", ["vm", "health", VM]),
  flood("flood-err", ["vm", "workspace", "export", VM]),
  flood("flood-out", ["RPC:vm.workspace.export"]),
  flood("flood-out", ["RPC:vm.workspace.export", '{"nameOnly":true}']),
  flood(
    "flood-out",
    ["vm", "workspace", "export", VM],
    /export output of VM hostile is malformed \(no header/,
  ),
  flood("flood-err", ["vm", "workspace", "prepare", VM, "REPO"]),
  flood("flood-out", ["vm", "workspace", "prepare", VM, "REPO"]),
  // Never-ending output, and output then a hang: stopped at the cap, not at a timeout.
  flood("endless-out", ["vm", "session", "list", VM]),
  flood("endless-err", ["vm", "session", "show", VM, "web"]),
  flood("endless-out", ["vm", "ports", VM]),
  flood("endless-err", ["vm", "workspace", "export", VM, "--name-only"]),
  flood("flood-hang", ["vm", "session", "list", VM]),
  flood("flood-hang", ["vm", "ports", VM]),
  {
    name: "ports: one line, then a hang until the call's deadline",
    input: { guest: { mode: "hang", out: ss("0.0.0.0:22", "sshd") }, args: ["vm", "ports", VM] },
    expect: /did not answer 'ss' \(vm ports\) within 15 s/,
  },
  // Lines of 1 MB without a newline.
  {
    name: "session list: a 1 MB line that is no record",
    input: {
      guest: { mode: "reply", out: "x".repeat(1 << 20) },
      args: ["vm", "session", "list", VM],
    },
    expect: /where a session record belongs: "x{200}\.\.\."/,
  },
  {
    name: "ports: a 1 MB line that is no socket",
    input: { guest: { mode: "reply", out: "\x1b".repeat(1 << 20) }, args: ["vm", "ports", VM] },
    expect: null,
  },
  {
    name: "export --name-only: a name of 1 MB",
    input: {
      guest: { mode: "reply", out: exportOut("a".repeat(1 << 20)) },
      args: ["vm", "workspace", "export", VM, "--name-only"],
    },
    expect: /a changed path longer than 65536 bytes/,
  },
  {
    name: "session logs: 1 MB of escapes is the session's own output, passed through",
    input: {
      guest: { mode: "reply", out: Buffer.from(CLEAR.repeat(150_000)).toString("base64") },
      args: ["vm", "session", "logs", VM, "web"],
      raw: true,
    },
    expect: null,
  },
  // Control sequences in what banger prints: shown escaped.
  {
    name: "session list: OSC 52 in the name",
    input: {
      guest: { mode: "reply", out: rec(`web${OSC52}`) },
      args: ["vm", "session", "list", VM],
      shows: /web\\x1b\]52;c;ZWNobyBwd25lZA==\\x07/,
    },
    expect: null,
  },
  {
    name: "session list: title change and clear-screen in the command",
    input: {
      guest: { mode: "reply", out: rec("web", `sleep ${TITLE}${CLEAR}`) },
      args: ["vm", "session", "list", VM],
      shows: /\\x1b\]0;pwned\\x07\\x1b\[2J/,
    },
    expect: null,
  },
  {
    name: "session show: C1 CSI in the cwd",
    input: {
      guest: { mode: "reply", out: rec("web", "x", `/root${CSI_C1}`) },
      args: ["vm", "session", "show", VM, "web"],
      shows: /\/root\\x9b31m/,
    },
    expect: null,
  },
  {
    name: "session list: NUL, BEL, DEL and invalid UTF-8 in the command",
    input: {
      guest: {
        mode: "reply",
        out: Buffer.concat([
          Buffer.from("web\trunning\t1\t\t\t/root\ta\0b\x07c\x7f"),
          Buffer.from([0xff, 0xfe, 0x0a]),
        ]),
      },
      args: ["vm", "session", "list", VM],
      shows: /a\\x00b\\x07c\\x7f\uFFFD\uFFFD/,
    },
    expect: null,
  },
  {
    name: "session list: a 400-digit pid is no pid",
    input: {
      guest: { mode: "reply", out: rec("web", "x", "/root", "9".repeat(400)) },
      args: ["vm", "session", "list", VM],
    },
    expect: null,
  },
  {
    name: "session list: an unknown state with an escape",
    input: {
      guest: { mode: "reply", out: rec("web", "x", "/root", "1", `zombie${CLEAR}`) },
      args: ["vm", "session", "list", VM],
    },
    expect: /an unknown state where a session record belongs/,
  },
  {
    name: "session show: escapes in every field",
    input: {
      guest: { mode: "reply", out: rec(`w${TITLE}`, `c${OSC52}`, `/r${CLEAR}`) },
      args: ["vm", "session", "show", VM, "web"],
      shows: /command: +c\\x1b\]52/,
    },
    expect: null,
  },
  {
    name: "session start: the started line names an escaped session",
    input: {
      guest: { mode: "reply", out: rec(`web${CLEAR}`) },
      args: ["vm", "session", "start", VM, "web", "--", "sleep", "1"],
      shows: /web\\x1b\[2J\\x1b\[H started/,
    },
    expect: null,
  },
  {
    name: "session list --json: JSON as it is (escaped by JSON itself)",
    input: {
      guest: { mode: "reply", out: rec(`web${OSC52}`) },
      args: ["vm", "session", "list", VM, "--json"],
      shows: /"name": "web\\u001b\]52/,
    },
    expect: null,
  },
  {
    name: "session error quoting the guest's stderr with OSC 52",
    input: {
      guest: {
        mode: "reply",
        err: `banger-session: notfound: no session named '${OSC52}'\n`,
        code: 3,
      },
      args: ["vm", "session", "show", VM, "web"],
      shows: /\\x1b\]52/,
    },
    expect: /no session named '\\x1b\]52;c;ZWNobyBwd25lZA==\\x07' in VM hostile/,
  },
  {
    name: "ssh failure quoting a clear-screen",
    input: {
      guest: { mode: "reply", err: `${CLEAR}kex_exchange_identification\n`, code: 255 },
      args: ["vm", "session", "list", VM],
    },
    expect: /could not reach VM hostile over SSH: \\x1b\[2J/,
  },
  {
    name: "ports error quoting a title change",
    input: {
      guest: { mode: "reply", err: `${TITLE}ss: not found\n`, code: 127 },
      args: ["vm", "ports", VM],
    },
    expect: /could not list sockets in hostile: \\x1b\]0;pwned\\x07ss: not found/,
  },
  {
    name: "ports: OSC 52 as the process name, clear-screen in the address",
    input: {
      guest: { mode: "reply", out: ss(`${CLEAR}0.0.0.0:8080`, `${OSC52}`) },
      args: ["vm", "ports", VM],
      shows: /\\x1b\[2J\\x1b\[H0\.0\.0\.0 +8080 +\\x1b\]52/,
    },
    expect: null,
  },
  {
    name: "export --name-only: names with escapes and newlines",
    input: {
      guest: { mode: "reply", out: exportOut(`ok.txt\0${OSC52}.txt\0two\nlines\0`) },
      args: ["vm", "workspace", "export", VM, "--name-only"],
      shows: /^ok\.txt\n\\x1b\]52;c;ZWNobyBwd25lZA==\\x07\.txt\ntwo\\nlines\n/,
    },
    expect: null,
  },
  {
    name: "export: no workspace, stderr with a title change",
    input: {
      guest: { mode: "reply", err: `banger: no workspace ${TITLE}\n`, code: 11 },
      args: ["vm", "workspace", "export", VM],
    },
    expect: /no workspace in VM hostile: no workspace \\x1b\]0;pwned\\x07/,
  },
  {
    name: "prepare: the guest fails with OSC 52 on stderr",
    input: {
      guest: { mode: "reply", err: `tar: ${OSC52}\n`, code: 2 },
      args: ["vm", "workspace", "prepare", VM, "REPO"],
    },
    expect: /could not prepare the workspace in hostile: tar: \\x1b\]52/,
  },
];

test(`a hostile guest's output (${rows.length} rows): capped, escaped, daemon alive, nothing left`, async () => {
  for (const row of rows) row.input.args = row.input.args.map((a) => (a === "REPO" ? repo : a));
  await runTable(rows, attempt, { daemon, roots: [daemon.home.home, fake] });
});
