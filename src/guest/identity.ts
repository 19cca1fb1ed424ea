import net from "node:net";
import { BangerError, ErrorCode } from "../api/errors.js";
import { TOOLKIT_DIR } from "../config/defaults.js";
import { tailLines, visible, visibleLines } from "../util/terminal-text.js";
import { scriptArgv, type GuestScripts } from "./scripts.js";
import type { GuestShell } from "./shell.js";
import { shellQuote, type GuestTarget } from "./ssh.js";

/**
 * Host side of the identity channel (docs/internals/identity.md): a VM restored from a snapshot
 * is told who it is now in one line over its identity socket, read in the guest by
 * guest-scripts/identity.sh, which answers one line.
 */

/** Who a restored guest is now. A null network value keeps what the guest has. */
export interface GuestIdentity {
  /** A DNS label (the VM's name). */
  hostname: string;
  /** a.b.c.d/n */
  ip: string | null;
  gw: string | null;
  dns: string | null;
  /** Lower-case, unicast. */
  mac: string | null;
  /** The host's clock, in seconds since the epoch. */
  epochSeconds: number;
  /** 32 bytes of fresh entropy, as 64 lower-case hex digits. */
  seedHex: string;
  /**
   * True for a new VM made from a snapshot: it gets new SSH host keys and machine-id. False for
   * the VM that was saved, resumed: it keeps its own (banger pinned its host key).
   */
  clone: boolean;
}

/** The longest line the guest takes; the reader refuses longer ones. */
export const IDENTITY_LINE_MAX = 512;
/** The most of the guest's answer read: past it, the answer is refused. */
export const IDENTITY_ANSWER_MAX = 1024;
/** What the reader's `start` exits with when the VM has no banger.identity port. */
export const IDENTITY_NO_PORT_STATUS = 4;
/** How long starting the reader over SSH may take (it returns once the reader waits on the port). */
export const IDENTITY_START_TIMEOUT_MS = 30_000;

const OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])";
const IPV4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const CIDR = new RegExp(`^${OCTET}(\\.${OCTET}){3}/([1-9]|[12][0-9]|3[0-2])$`);
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** The first octet's low bit marks a group address, never a device's. */
const MAC = /^[0-9a-f][02468ace](:[0-9a-f]{2}){5}$/;
const SEED = /^[0-9a-f]{64}$/;

/** The v1 line (without its newline). A value outside its pattern is banger's bug: it is never sent. */
export function identityLine(id: GuestIdentity): string {
  const wrong = (field: string, value: unknown): never => {
    throw new BangerError(
      ErrorCode.Internal,
      `internal error: the guest identity's ${field} is not valid: ${visible(JSON.stringify(value) ?? String(value))}`,
    );
  };
  const orKeep = (field: string, value: string | null, pattern: RegExp): string =>
    value === null ? "-" : pattern.test(value) ? value : wrong(field, value);
  if (!LABEL.test(id.hostname)) wrong("hostname", id.hostname);
  if (
    !Number.isSafeInteger(id.epochSeconds) ||
    id.epochSeconds < 1 ||
    id.epochSeconds > 99_999_999_999
  )
    wrong("epoch", id.epochSeconds);
  if (!SEED.test(id.seedHex)) wrong("seed", id.seedHex);
  const line = [
    "banger-identity",
    "v1",
    `hostname=${id.hostname}`,
    `ip=${orKeep("ip", id.ip, CIDR)}`,
    `gw=${orKeep("gw", id.gw, IPV4)}`,
    `dns=${orKeep("dns", id.dns, IPV4)}`,
    `mac=${orKeep("mac", id.mac, MAC)}`,
    `epoch=${id.epochSeconds}`,
    `seed=${id.seedHex}`,
    `clone=${id.clone ? "yes" : "no"}`,
  ].join(" ");
  if (line.length > IDENTITY_LINE_MAX) wrong("line", line);
  return line;
}

const RETRY_MS = 50;

const failure = (message: string) => new BangerError(ErrorCode.Internal, message);
const secondsOf = (ms: number) => Math.max(1, Math.round(ms / 1000));

/**
 * Tells a restored guest who it is over its identity socket (QEMU's chardev): connects,
 * retrying while the VMM has not made the socket or does not listen yet, then `tellIdentity`.
 * `timeoutMs` bounds the whole exchange.
 */
export async function sendIdentity(
  socketPath: string,
  identity: GuestIdentity,
  timeoutMs: number,
): Promise<void> {
  identityLine(identity); // a bad value fails before anything connects
  const deadline = Date.now() + timeoutMs;
  const socket = await connectRetrying(socketPath, timeoutMs);
  await tellIdentity(socket, identity, Math.max(1, deadline - Date.now()));
}

function connectRetrying(socketPath: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    let retry: NodeJS.Timeout | null = null;
    let current: net.Socket | null = null;
    const deadline = setTimeout(() => {
      if (retry) clearTimeout(retry);
      current?.destroy();
      reject(
        failure(
          `the VM's identity channel ${socketPath} did not open within ${secondsOf(timeoutMs)}s`,
        ),
      );
    }, timeoutMs);
    const attempt = () => {
      retry = null;
      const s = net.createConnection(socketPath);
      current = s;
      const onError = (err: NodeJS.ErrnoException) => {
        s.destroy();
        // No socket yet, or no listener on it yet: the VMM is still starting.
        if (err.code === "ENOENT" || err.code === "ECONNREFUSED") {
          retry = setTimeout(attempt, RETRY_MS);
          return;
        }
        clearTimeout(deadline);
        reject(failure(`the VM's identity channel failed: ${err.message}`));
      };
      s.once("error", onError);
      s.once("connect", () => {
        s.off("error", onError);
        clearTimeout(deadline);
        resolve(s);
      });
    };
    attempt();
  });
}

/**
 * The exchange on an open channel to the guest's reader (QEMU's port through `sendIdentity`, or
 * any other stream to it): writes the line and reads the guest's one-line answer. Resolves on
 * `ok`; rejects on `error <why>` (the guest's reason, escaped: it is guest text), on a close, an
 * answer past IDENTITY_ANSWER_MAX or anything else, and after `timeoutMs`. Closes the stream.
 */
export function tellIdentity(
  socket: net.Socket,
  identity: GuestIdentity,
  timeoutMs: number,
): Promise<void> {
  const line = `${identityLine(identity)}\n`;
  return new Promise((resolve, reject) => {
    let settled = false;
    const finish = (err: BangerError | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      socket.destroy();
      if (err) reject(err);
      else resolve();
    };
    const deadline = setTimeout(
      () =>
        finish(
          failure(`the guest did not answer its new identity within ${secondsOf(timeoutMs)}s`),
        ),
      timeoutMs,
    );
    let answer = Buffer.alloc(0);
    socket.on("data", (chunk: Buffer) => {
      answer = Buffer.concat([answer, chunk]);
      const end = answer.indexOf(0x0a);
      if (end < 0) {
        if (answer.length > IDENTITY_ANSWER_MAX)
          finish(
            failure(`the guest's answer ran past ${IDENTITY_ANSWER_MAX} bytes without a line end`),
          );
        return;
      }
      finish(judge(answer.subarray(0, end).toString("utf8")));
    });
    socket.on("error", (err) =>
      finish(failure(`the VM's identity channel failed: ${err.message}`)),
    );
    socket.on("close", () =>
      finish(failure("the guest closed its identity channel without answering")),
    );
    socket.write(line);
  });
}

/** null for `ok`; the error for anything else. */
function judge(text: string): BangerError | null {
  if (text === "ok") return null;
  if (text.startsWith("error "))
    return failure(`the guest could not take its new identity: ${visible(text.slice(6, 300))}`);
  return failure(
    `the guest answered its identity with neither ok nor error: ${visible(text.slice(0, 80))}`,
  );
}

/** The scripts the reader needs: itself, and the network and host key steps it runs. */
export type IdentityScripts = Pick<GuestScripts, "identity" | "networkSetup" | "firstBoot">;

/** The remote command that starts the reader (under banger's busybox sh, the shell it is written for). */
export function identityStartCommand(scripts: IdentityScripts): string {
  return scriptArgv([`/${TOOLKIT_DIR}/bin/sh`], scripts.identity, "banger-identity", [
    "start",
    scripts.identity,
    scripts.networkSetup,
    scripts.firstBoot,
  ])
    .map(shellQuote)
    .join(" ");
}

/**
 * Starts the identity reader in a running guest, before it is snapshotted, so the snapshot's
 * clones (and the VM itself once resumed) have one waiting for their line. Returns once it runs;
 * does nothing when one already runs.
 */
export async function startIdentityReader(
  shell: GuestShell,
  target: GuestTarget,
  scripts: IdentityScripts,
): Promise<void> {
  const result = await shell.run(target, identityStartCommand(scripts), {
    what: "starting the identity reader",
    timeoutMs: IDENTITY_START_TIMEOUT_MS,
  });
  if (result.code === 0) return;
  if (result.code === IDENTITY_NO_PORT_STATUS)
    throw new BangerError(
      ErrorCode.Precondition,
      `VM ${target.vmName} was booted before warm start support: it has no identity channel, so its clones could not be told who they are`,
      `restart it (banger vm stop ${target.vmName} && banger vm start ${target.vmName}), then snapshot it`,
    );
  const why = visibleLines(tailLines(result.stderr));
  throw new BangerError(
    ErrorCode.Internal,
    result.timedOut
      ? `starting the identity reader in VM ${target.vmName} did not finish within ${IDENTITY_START_TIMEOUT_MS / 1000}s`
      : `could not start the identity reader in VM ${target.vmName} (exit ${result.code ?? result.signal})${why ? `:\n${why}` : ""}`,
    `see 'banger vm health ${target.vmName}'`,
  );
}
