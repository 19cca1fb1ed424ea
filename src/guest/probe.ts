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
