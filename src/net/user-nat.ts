import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { CommandRunner } from "../system/runner.js";
import { isPidAlive } from "../vmm/process.js";

/** passt's socket in the VM's directory (the frame filter connects to it). */
const PASST_SOCKET = "passt.sock";

/**
 * User-mode networking with egress (--nat without a bridge): passt gives the guest the
 * outside world and forwards SSH on 127.0.0.1; banger's frame filter sits between QEMU
 * and passt so the guest never reaches the host itself (see frame-filter.ts for why
 * passt's --no-map-gw alone is not enough). Both run detached, like the VMM, and their
 * pids live in the VM's handles.
 */
export interface UserNatHandles {
  passtPid: number;
  relayPid: number;
  /** Where QEMU's stream netdev connects: the filter's socket. */
  socket: string;
}

/** The guest's side of user-mode networking: the same addresses QEMU's slirp uses. */
export const USER_NET = {
  /** QEMU's default for the first NIC, set explicitly so the filter can announce it. */
  mac: "52:54:00:12:34:56",
  ip: "10.0.2.15",
  prefix: 24,
  gateway: "10.0.2.2",
  dns: "10.0.2.3",
} as const;

export function passtArgs(opts: {
  dir: string;
  sshPort: number;
  uid: number;
  gid: number;
}): string[] {
  return [
    "--foreground", // banger detaches it; its pid is the child's
    "--quiet",
    "--ipv4-only",
    "--one-off", // exits when the filter (and so QEMU) goes away
    "--runas",
    `${opts.uid}:${opts.gid}`, // a root daemon's passt would drop to nobody and fail to bind in the VM dir
    "--no-map-gw", // the gateway address is not the host's loopback
    "--address",
    USER_NET.ip,
    "--netmask",
    String(USER_NET.prefix),
    "--gateway",
    USER_NET.gateway,
    "--dns",
    USER_NET.dns,
    "--dns-forward",
    USER_NET.dns, // the guest's resolver address goes to the host's resolver
    "--tcp-ports",
    `127.0.0.1/${opts.sshPort}:22`,
    "--udp-ports",
    "none",
    "--socket",
    path.join(opts.dir, PASST_SOCKET),
  ];
}

/** How to run the frame filter: the compiled netrelay-main.js, or the .ts under tsx in tests. */
export function relayCommand(): { cmd: string; args: string[] } {
  const here = fileURLToPath(import.meta.url);
  const main = path.join(path.dirname(here), `netrelay-main${path.extname(here)}`);
  return { cmd: process.execPath, args: main.endsWith(".ts") ? ["--import", "tsx", main] : [main] };
}

function spawnDetached(cmd: string, args: string[], logFile: string): ChildProcess {
  const fd = fs.openSync(logFile, "w", 0o600);
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ["ignore", fd, fd] });
    child.on("error", () => {});
    child.unref();
    if (child.pid === undefined)
      throw new BangerError(ErrorCode.Internal, `could not start ${path.basename(cmd)}`);
    return child;
  } finally {
    fs.closeSync(fd);
  }
}

/** SIGKILL through the child's own handle (it cannot name a recycled pid) and wait, bounded, for it. */
async function killChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    setTimeout(resolve, 5000).unref();
  });
  child.kill("SIGKILL");
  await exited;
}

async function tail(file: string): Promise<string> {
  const text = await fsp.readFile(file, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => l.trim() && !l.includes("syslog"))
    .slice(-3)
    .join(" ");
}

/**
 * Waits, bounded, for a helper's socket; fails at once when the helper has exited. The
 * bound is generous: creating a network namespace (passt sandboxes itself in one) can
 * wait seconds behind other namespaces being torn down on a busy host.
 */
async function waitForSocket(file: string, child: ChildProcess, what: string, log: string) {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (fs.existsSync(file)) return;
    if (child.exitCode !== null || child.signalCode !== null) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new BangerError(
    ErrorCode.Internal,
    `${what} did not start: ${(await tail(log)) || "no socket after 30s"}`,
    `see ${log}`,
  );
}

/** Is `pid` still one of this VM's helpers (a recycled pid names another command line)? */
async function helperRunning(pid: number, dir: string): Promise<boolean> {
  if (!isPidAlive(pid)) return false;
  const cmdline = await fsp.readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
  return cmdline.includes(dir);
}

/** Waits, bounded, until `pid` is no longer this VM's helper (exited, or a zombie nobody reaps). */
async function helperGone(pid: number, dir: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (!(await helperRunning(pid, dir))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !(await helperRunning(pid, dir));
}

/** Starts passt and the filter for one VM; on any failure nothing of them is left. */
export async function startUserNat(opts: {
  dir: string;
  sshPort: number;
  runner: CommandRunner;
  relay?: { cmd: string; args: string[] };
}): Promise<UserNatHandles> {
  const passt = await opts.runner.which("passt");
  if (!passt) {
    throw new BangerError(
      ErrorCode.Precondition,
      "--nat without a bridge needs passt, which is not installed",
      "sudo apt-get install passt (see 'banger doctor'), or create the VM without --nat",
    );
  }
  const passtSock = path.join(opts.dir, PASST_SOCKET);
  const socket = path.join(opts.dir, "net.sock");
  await fsp.rm(passtSock, { force: true });
  await fsp.rm(socket, { force: true });
  const children: ChildProcess[] = [];
  try {
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const passtLog = path.join(opts.dir, "passt.log");
    const passtChild = spawnDetached(
      passt,
      passtArgs({ dir: opts.dir, sshPort: opts.sshPort, uid, gid }),
      passtLog,
    );
    children.push(passtChild);
    await waitForSocket(passtSock, passtChild, "passt", passtLog);
    const relay = opts.relay ?? relayCommand();
    const relayLog = path.join(opts.dir, "netrelay.log");
    const relayChild = spawnDetached(
      relay.cmd,
      [...relay.args, socket, passtSock, USER_NET.mac, USER_NET.ip],
      relayLog,
    );
    children.push(relayChild);
    await waitForSocket(socket, relayChild, "banger's network filter", relayLog);
    return { passtPid: passtChild.pid!, relayPid: relayChild.pid!, socket };
  } catch (err) {
    for (const child of children.reverse()) await killChild(child);
    await fsp.rm(passtSock, { force: true });
    await fsp.rm(socket, { force: true });
    throw err;
  }
}

/** Stops a VM's helpers (the filter first), if they are still its own; removes their sockets. */
export async function stopUserNat(h: UserNatHandles, dir: string): Promise<void> {
  for (const pid of [h.relayPid, h.passtPid]) {
    if (pid <= 0 || !(await helperRunning(pid, dir))) continue;
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      continue;
    }
    if (!(await helperGone(pid, dir, 2000))) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
      await helperGone(pid, dir, 5000);
    }
  }
  await fsp.rm(path.join(dir, PASST_SOCKET), { force: true });
  await fsp.rm(h.socket, { force: true });
}

/** Are both helpers still running (an adopted VM keeps its network only while they do)? */
export async function userNatRunning(h: UserNatHandles, dir: string): Promise<boolean> {
  return (await helperRunning(h.passtPid, dir)) && (await helperRunning(h.relayPid, dir));
}
