import net from "node:net";
import { BangerError, ErrorCode } from "../api/errors.js";
import { tailLines } from "../util/terminal-text.js";
import { GuestOutputTooLargeError } from "./output.js";
import type { GuestShell } from "./shell.js";
import type { GuestTarget } from "./ssh.js";

/** A listening socket in the guest. */
export interface ListeningSocket {
  proto: string;
  address: string;
  port: number;
  process: string | null;
}

/** `ss -Htuln -p` lines → protocol, local address, port and process name. */
export function parseSsListening(text: string): ListeningSocket[] {
  const out: ListeningSocket[] = [];
  for (const line of text.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const local = cols[4]!;
    const colon = local.lastIndexOf(":");
    const port = Number(local.slice(colon + 1));
    if (!Number.isInteger(port)) continue;
    const proc = /users:\(\("([^"]+)"/.exec(line)?.[1] ?? null;
    out.push({
      proto: cols[0]!,
      address: local.slice(0, colon).replace(/%\S+$/, ""),
      port,
      process: proc,
    });
  }
  return out;
}

const SS_TIMEOUT_MS = 15_000;

/** Listening sockets in the guest, from `ss` over SSH. */
export async function listeningSockets(
  shell: GuestShell,
  target: GuestTarget,
): Promise<ListeningSocket[]> {
  const name = target.vmName;
  const r = await shell.run(target, "ss -Htuln -p 2>/dev/null || ss -Htuln", {
    what: "'ss' (vm ports)",
    timeoutMs: SS_TIMEOUT_MS,
  });
  if (r.timedOut)
    throw new BangerError(
      ErrorCode.Internal,
      `VM ${name} did not answer 'ss' (vm ports) within ${SS_TIMEOUT_MS / 1000} s`,
      `'banger vm health ${name}' checks the VM`,
    );
  if (r.code !== 0)
    throw new BangerError(
      ErrorCode.Internal,
      `could not list sockets in ${name}: ${tailLines(r.stderr) || `ssh exited with status ${r.code ?? r.signal}`}`,
    );
  return parseSsListening(r.stdout);
}

/** Does SSH in a running guest answer `true`? With a line saying what was seen. */
export async function sshHealth(
  shell: GuestShell,
  target: GuestTarget,
): Promise<{ ssh: boolean; detail: string }> {
  const r = await shell
    .run(target, "true", { what: "the health probe", timeoutMs: 10_000 })
    .catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));
  const ssh = !(r instanceof Error) && r.code === 0;
  return {
    ssh,
    detail: ssh
      ? "VMM running, SSH answers"
      : r instanceof GuestOutputTooLargeError
        ? `VMM running, SSH answers with far too much output: ${r.message}`
        : `VMM running, SSH does not answer: see 'banger vm logs ${target.vmName}'`,
  };
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(2000, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** The VMM exited before SSH answered (a kernel panic, say): the caller marks the VM stopped. */
export function vmmExitedDuringBoot(vmName: string): BangerError {
  return new BangerError(
    ErrorCode.BootFailed,
    `VM ${vmName} stopped while booting: its VMM exited before SSH answered`,
    `'banger vm logs ${vmName}' shows its whole console (a kernel panic, a root disk that would not mount); the VM is stopped: 'banger vm start ${vmName}' tries again, 'banger vm delete ${vmName}' removes it`,
  );
}

/**
 * Ready = `ssh true` succeeds. Bounded by its own deadline (each probe too: a listener
 * that accepts and never speaks SSH must not stretch a 3 s wait to 15 s). A VMM that exits
 * during the wait is a BootFailed error; a deadline that runs out is SshTimeout, and the
 * caller leaves that VM running for inspection.
 */
export async function waitForSsh(opts: {
  shell: GuestShell;
  target: GuestTarget;
  deadlineMs: number;
  isAlive: () => Promise<boolean>;
  signal?: AbortSignal;
}): Promise<void> {
  const { vmName, host, port } = opts.target;
  const deadline = Date.now() + opts.deadlineMs;
  while (Date.now() < deadline) {
    if (opts.signal?.aborted)
      throw new BangerError(ErrorCode.Cancelled, "cancelled while waiting for SSH");
    if (!(await opts.isAlive())) throw vmmExitedDuringBoot(vmName);
    const left = deadline - Date.now();
    if (left > 0 && (await portOpen(host, port))) {
      const r = await opts.shell.run(opts.target, "true", {
        what: "the SSH readiness probe",
        // At least 1 s, so a probe can finish its handshake near the deadline.
        timeoutMs: Math.min(15_000, Math.max(1000, left)),
        // A cancelled create must not wait for a probe to time out.
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      if (r.code === 0) return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new BangerError(
    ErrorCode.SshTimeout,
    `VM ${vmName} did not answer on SSH within ${Math.round(opts.deadlineMs / 1000)}s; sshd in the guest is the likely culprit`,
    `the VM is left running for inspection: 'banger vm logs ${vmName}' shows its console; 'banger vm delete ${vmName}' removes it`,
  );
}
