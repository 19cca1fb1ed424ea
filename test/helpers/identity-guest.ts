import { execFile, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import type { CommandResult, CommandRunner } from "../../src/system/runner.js";
import { waitFor } from "./wait-for.js";

/**
 * A stand-in guest for guest-scripts/identity.sh: a root holding the host's static busybox as
 * banger's toolkit, a fake sysfs naming the virtio ports, and a regular file as the identity
 * port (a read at its end is EOF, as the real port's while no host is connected; the answer is
 * written after the line the reader read). It runs in a chroot in new pid, mount, network and
 * UTS namespaces with a real /proc: PID 1 is a small init standing in for banger's (or the
 * image's); the SSH server is a busybox sleep whose executable is the server's binary, so
 * signals reach only it. busybox's sh runs its own applets before anything on PATH, so date, ip
 * and hostname are the real ones: ip and hostname act on the namespaces' own veth and name, and
 * the whole tree runs without CAP_SYS_TIME and CAP_SYS_BOOT, under strace, which records the
 * clock, hostname and reboot calls and answers the clock and reboot ones itself (they never
 * reach the kernel). Tools that are not applets (ssh-keygen, dropbearkey, perl, systemctl,
 * banger's ssh-server) are stubs that record how they were called.
 */

const exec = promisify(execFile);

export type GuestServer = "sshd" | "dropbear";
/** Who is PID 1: banger's init, an image's own init, or systemd (with banger-ssh.service's KillMode). */
export type GuestInit = "banger" | "image" | { systemd: string };

export interface GuestOptions {
  server: GuestServer;
  init: GuestInit;
  /** false: the VM has no banger.identity port (booted before warm start). */
  port?: boolean;
}

export const OLD_MACHINE_ID = "0123456789abcdef0123456789abcdef";
export const PORT = "dev/vport1p2";

const STUBS: Record<string, string> = {
  "usr/bin/perl": 'echo "perl $*" >> /calls',
  "usr/bin/systemctl":
    'echo "systemctl $*" >> /calls\n[ "$1" = show ] && cat /tmp/killmode\nexit 0',
  "usr/lib/banger/ssh-server": 'echo "ssh-server $*" >> /calls',
  "usr/bin/ssh-keygen": [
    'echo "ssh-keygen $*" >> /calls',
    'while [ "$#" -gt 0 ]; do [ "$1" = -f ] && f=$2; shift; done',
    'echo new-key > "$f"; echo new-key.pub > "$f.pub"',
  ].join("\n"),
  "usr/lib/banger/bin/dropbearkey": [
    'echo "dropbearkey $*" >> /calls',
    'while [ "$#" -gt 0 ]; do [ "$1" = -f ] && f=$2; shift; done',
    'echo new-key > "$f"',
  ].join("\n"),
};

/**
 * PID 1: starts the stand-in SSH server (its babysitter records how it ended), runs the
 * daemon's start command twice (the second must find the first reader), then waits for the
 * reader to finish (bounded), writes down the network and hostname, and exits, which ends
 * everything in the namespaces.
 */
const INIT = `PATH=/usr/lib/banger/bin
export PATH
hostname old-name
mkdir -p /tmp/srv
ln -s "$SERVER" /tmp/srv/sleep
( /tmp/srv/sleep 600 & echo $! > /tmp/server.pid; wait $!; echo "server exited $?" >> /calls ) &
while [ ! -s /tmp/server.pid ]; do sleep 0.05; done
sh -c "$START" 2>/tmp/start.err; echo $? > /tmp/start.status
cat /run/banger/identity.pid >> /tmp/pids 2>/dev/null
sh -c "$START" 2>>/tmp/start.err; echo "again $?" >> /tmp/again
cat /run/banger/identity.pid >> /tmp/pids 2>/dev/null
touch /tmp/ready
i=0
while [ -e /run/banger/identity.pid ] && [ "$i" -lt 600 ]; do sleep 0.05; i=$((i + 1)); done
# Under an image's init the reader restarts the server detached: let it record its start before
# this init's exit ends the namespace (it lost that race once under load).
j=0
while [ -e /tmp/expect-ssh-server ] && ! grep -q '^ssh-server' /calls 2>/dev/null && [ "$j" -lt 100 ]; do
  sleep 0.05; j=$((j + 1))
done
kill -0 "$(cat /tmp/server.pid)" 2>/dev/null && echo "server alive" >> /calls
{ ip -o link show dev eth0; ip -o -4 addr show dev eth0; ip route; hostname; } > /state 2>&1
exit 0
`;

/** A root in `dir` for one run. */
export async function guestRoot(dir: string, opts: GuestOptions): Promise<string> {
  const root = await fs.mkdtemp(path.join(dir, "guest-"));
  const at = (p: string) => path.join(root, p);
  for (const d of [
    "usr/lib/banger/bin",
    "usr/bin",
    "usr/sbin",
    "sbin",
    "etc/ssh",
    "var/lib/banger",
    "run",
    "tmp",
    "dev",
    "proc",
    "sys/class/virtio-ports/vport1p1",
    "sys/class/virtio-ports/vport1p2",
    "sys/class/net/lo",
    "sys/class/net/eth0",
  ])
    await fs.mkdir(at(d), { recursive: true });
  const busybox = at("usr/lib/banger/bin/busybox");
  await fs.copyFile("/bin/busybox", busybox);
  await fs.chmod(busybox, 0o755);
  const applets = (await exec("/bin/busybox", ["--list"])).stdout.split("\n").filter(Boolean);
  for (const a of applets)
    if (!STUBS[`usr/lib/banger/bin/${a}`] && a !== "busybox")
      await fs.symlink("busybox", at(`usr/lib/banger/bin/${a}`));
  for (const [file, body] of Object.entries(STUBS))
    await fs.writeFile(at(file), `#!/usr/lib/banger/bin/sh\n${body}\n`, { mode: 0o755 });
  // The server's binary: a copy of busybox, so the stand-in server's /proc/<pid>/exe is it.
  const server = opts.server === "sshd" ? "usr/sbin/sshd" : "usr/lib/banger/bin/dropbear";
  await fs.copyFile("/bin/busybox", at(server));
  await fs.chmod(at(server), 0o755);
  const init = opts.init === "banger" ? "usr/lib/banger/init" : "sbin/init";
  await fs.writeFile(at(init), INIT, { mode: 0o755 });
  if (opts.init === "image" && opts.server === "dropbear")
    await fs.writeFile(at("tmp/expect-ssh-server"), "");
  if (typeof opts.init === "object") {
    await fs.mkdir(at("run/systemd/system"), { recursive: true });
    await fs.writeFile(at("tmp/killmode"), `${opts.init.systemd}\n`);
  }
  await fs.writeFile(at("sys/class/virtio-ports/vport1p1/name"), "org.qemu.guest_agent.0\n");
  await fs.writeFile(
    at("sys/class/virtio-ports/vport1p2/name"),
    opts.port === false ? "something.else\n" : "banger.identity\n",
  );
  await fs.writeFile(at(PORT), "");
  await fs.writeFile(at("dev/console"), "");
  await fs.writeFile(at("dev/urandom"), "");
  await exec("mknod", [at("dev/null"), "c", "1", "3"]);
  await fs.writeFile(at("calls"), "");
  await fs.writeFile(at("etc/hostname"), "old-name\n");
  await fs.writeFile(at("etc/machine-id"), `${OLD_MACHINE_ID}\n`);
  for (const k of ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key"])
    await fs.writeFile(at(`etc/ssh/${k}`), "old-key\n");
  await fs.writeFile(at("var/lib/banger/dropbear_ed25519_host_key"), "old-key\n");
  await fs.writeFile(at("var/lib/banger/first-boot-done"), "");
  return root;
}

/** One boot of a stand-in guest: the runner its start command goes through, and its port. */
export class StandInGuest {
  private child: ChildProcess | null = null;
  private exited: Promise<number | null> | null = null;

  constructor(
    readonly root: string,
    private readonly opts: GuestOptions,
  ) {}

  /** What GuestShell runs `ssh` with: the remote command is run by the stand-in's init. */
  get runner(): CommandRunner {
    return {
      run: async (cmd: string, args: string[]): Promise<CommandResult> => {
        if (cmd !== "ssh") throw new Error(`the stand-in guest runs ssh only, not ${cmd}`);
        this.boot(args.at(-1)!);
        const status = await waitFor("the start command", 30_000, async () =>
          fs.readFile(this.at("tmp/start.status"), "utf8").catch(() => null),
        );
        return {
          code: Number(status.trim()),
          signal: null,
          stdout: "",
          stderr: await fs.readFile(this.at("tmp/start.err"), "utf8"),
        };
      },
      which: () => Promise.resolve(null),
    };
  }

  private at(p: string): string {
    return path.join(this.root, p);
  }

  private boot(remoteCommand: string): void {
    const init = this.opts.init === "banger" ? "/usr/lib/banger/init" : "/sbin/init";
    const server = this.opts.server === "sshd" ? "/usr/sbin/sshd" : "/usr/lib/banger/bin/dropbear";
    const noCaps = "-sys_time,-sys_boot";
    // Host paths: the environment is the guest's. The veth pair gives ip a device of its own.
    const child = spawn(
      "/usr/bin/setpriv",
      [
        `--bounding-set=${noCaps}`,
        `--inh-caps=${noCaps}`,
        "--",
        "/usr/bin/strace",
        "-f",
        "-qq",
        "--seccomp-bpf",
        "-o",
        this.tracePath,
        "-e",
        "signal=none",
        "-e",
        "trace=clock_settime,settimeofday,sethostname,reboot",
        "-e",
        "inject=clock_settime,settimeofday,reboot:retval=0",
        "--",
        "/usr/bin/unshare",
        "--fork",
        "--kill-child",
        "--pid",
        "--mount",
        "--net",
        "--uts",
        `--mount-proc=${this.at("proc")}`,
        "--",
        "/bin/sh",
        "-c",
        'ip link add eth0 type veth peer name eth1 && ip link set eth1 up && exec /usr/sbin/chroot "$0" /usr/lib/banger/bin/sh "$1"',
        this.root,
        init,
      ],
      {
        env: { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", START: remoteCommand, SERVER: server },
        stdio: "ignore",
        detached: true,
      },
    );
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.on("exit", (code) => resolve(code));
      child.on("error", () => resolve(null));
    });
  }

  /** strace's record, beside the root. */
  private get tracePath(): string {
    return `${this.root}.trace`;
  }

  /** Both start commands have run: the line may be written. */
  async ready(): Promise<void> {
    await waitFor("the second start", 30_000, async () =>
      fs.access(this.at("tmp/ready")).then(
        () => true,
        () => null,
      ),
    );
  }

  /** Sends the line as the host would, and returns the reader's answer line. */
  async tell(line: string): Promise<string> {
    await this.ready();
    await fs.appendFile(this.at(PORT), `${line}\n`);
    return waitFor("the reader's answer", 30_000, async () => {
      const after = (await fs.readFile(this.at(PORT), "utf8")).slice(line.length + 1);
      return after.includes("\n") ? after.slice(0, after.indexOf("\n")) : null;
    });
  }

  /** Waits for the stand-in to end (it does once the reader is done); kills it past 30 s. */
  async done(): Promise<void> {
    if (!this.exited) return;
    const timer = setTimeout(() => void this.kill(), 30_000);
    await this.exited;
    clearTimeout(timer);
  }

  /** Ends it now if it still runs: its init is in the process group, and with it the kernel ends the namespace's rest. */
  async kill(): Promise<void> {
    if (!this.exited || !this.child?.pid) return;
    if (this.child.exitCode === null && this.child.signalCode === null) {
      try {
        process.kill(-this.child.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await this.exited;
  }

  /** The calls strace saw: the clock, hostname and reboot ones. */
  async syscalls(): Promise<string[]> {
    const text = await fs.readFile(this.tracePath, "utf8").catch(() => "");
    return text
      .split("\n")
      .filter((l) => /(clock_settime|settimeofday|sethostname|reboot)\(/.test(l))
      .map((l) => l.replace(/^\d+ +/, "").replace(/\s+= /, " = "));
  }

  /** What the init wrote down last: eth0's link and address, the routes, the hostname. */
  state(): Promise<string> {
    return this.read("state");
  }

  async calls(): Promise<string[]> {
    return (await fs.readFile(this.at("calls"), "utf8")).split("\n").filter(Boolean);
  }

  read(p: string): Promise<string> {
    return fs.readFile(this.at(p), "utf8");
  }
}

/** Whether this host can run the stand-in: root, and the tools and namespaces it is made of. */
export async function standInSkip(): Promise<string | false> {
  if (process.getuid?.() !== 0) return "the stand-in guest needs root (chroot, namespaces)";
  try {
    await exec("/usr/bin/strace", [
      "-f",
      "-qq",
      "--seccomp-bpf",
      "-o",
      "/dev/null",
      "-e",
      "inject=reboot:retval=0",
      "true",
    ]);
    await exec("/usr/bin/setpriv", ["--bounding-set=-sys_time", "--", "true"]);
    await exec("/usr/bin/unshare", [
      "--fork",
      "--pid",
      "--mount",
      "--net",
      "--uts",
      "--mount-proc",
      "--",
      "/bin/sh",
      "-c",
      "ip link add eth0 type veth peer name eth1",
    ]);
  } catch (err) {
    return `the stand-in guest cannot run here: ${(err as Error).message.split("\n")[0]}`;
  }
  return false;
}
