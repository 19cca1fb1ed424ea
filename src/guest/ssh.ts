import fsp from "node:fs/promises";
import path from "node:path";
import { runChecked, type CommandRunner } from "../system/runner.js";

export interface SshIdentity {
  privateKey: string;
  publicKey: string;
  knownHosts: string;
}

/** banger's own ed25519 key pair under state/ssh, made once. */
export async function ensureSshIdentity(
  sshDir: string,
  runner: CommandRunner,
): Promise<SshIdentity> {
  await fsp.mkdir(sshDir, { recursive: true, mode: 0o700 });
  const privateKey = path.join(sshDir, "id_ed25519");
  const identity = {
    privateKey,
    publicKey: `${privateKey}.pub`,
    knownHosts: path.join(sshDir, "known_hosts"),
  };
  const exists = await fsp.access(privateKey).then(
    () => true,
    () => false,
  );
  if (!exists) {
    await runChecked(runner, "ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "banger",
      "-f",
      privateKey,
    ]);
  }
  return identity;
}

/** A running VM as SSH sees it: enough to run commands in the guest without the daemon's locks. */
export interface GuestTarget {
  vmId: string;
  vmName: string;
  host: string;
  port: number;
  identity: SshIdentity;
}

/** OpenSSH arguments up to and including the destination, non-interactive (no password prompts). */
export function guestSshArgs(target: GuestTarget): string[] {
  return [
    ...daemonSshOptions(target.identity, target.vmName, target.port),
    "-o",
    "BatchMode=yes",
    // A VM deleted under a running import must not leave ssh waiting for its deadline.
    "-o",
    "ServerAliveInterval=15",
    "-o",
    "ServerAliveCountMax=4",
    `root@${target.host}`,
  ];
}

/** The daemon's `vm.ssh` answer: where a VM's sshd listens, and banger's key and known_hosts. */
export interface SshEndpoint {
  host: string;
  port: number;
  user: string;
  identityFile: string;
  knownHostsFile: string;
}

/** OpenSSH arguments up to and including the destination, CLI side; `extra` goes before the destination. */
export function endpointSshArgs(
  vmName: string,
  endpoint: SshEndpoint,
  extra: string[] = [],
): string[] {
  const identity = {
    privateKey: endpoint.identityFile,
    publicKey: "",
    knownHosts: endpoint.knownHostsFile,
  };
  return [
    ...sshOptions(identity, vmName, endpoint.port),
    ...extra,
    `${endpoint.user}@${endpoint.host}`,
  ];
}

/** The alias a VM's host key is pinned under in banger's known_hosts. */
export const hostKeyAlias = (vmName: string) => `${vmName}.vm`;

/**
 * What banger's own ssh never does toward an untrusted guest, whatever the user's
 * ~/.ssh/config says: command-line options win over every config file. No agent or
 * X11 forwarding, no forwards from the config, no local commands, no shared master
 * connection (a guest could ride it), no proxy (the VM's address is banger's to pick).
 */
export const GUEST_SAFE_SSH_OPTIONS: readonly string[] = [
  // First: OpenSSH before 8.5 has no KnownHostsCommand (before 7.8 no SetEnv) and would refuse
  // to run at all; those builds cannot take either from a config, so skipping them is safe.
  "IgnoreUnknown=KnownHostsCommand,SetEnv",
  "ForwardAgent=no",
  "ForwardX11=no",
  "ForwardX11Trusted=no",
  "ClearAllForwardings=yes",
  "PermitLocalCommand=no",
  "LocalCommand=none",
  "ControlMaster=no",
  "ControlPath=none",
  "ControlPersist=no",
  "ProxyCommand=none",
  "ProxyJump=none",
  "Tunnel=no",
  "GSSAPIDelegateCredentials=no",
  "RemoteCommand=none",
  "KnownHostsCommand=none",
  "UpdateHostKeys=no",
  // banger's key is a file; the user's agent is never asked (nor offered to the guest).
  "IdentityAgent=none",
  // SetEnv's first value wins and "none" is not accepted: a harmless one keeps the config's out.
  "SetEnv=BANGER=1",
];

/**
 * The environment the CLI's ssh toward a guest runs with: SendEnv in the user's config adds
 * up and cannot be cleared from the command line, so what it could send is not there.
 */
export function guestSshEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const keep = /^(PATH|HOME|USER|LOGNAME|TERM|COLORTERM|LANG|LANGUAGE|LC_[A-Z_]+|TZ|TMPDIR)$/;
  return Object.fromEntries(Object.entries(env).filter(([k]) => keep.test(k)));
}

/** OpenSSH options that reach a VM with banger's key, pinning its host key on first contact (CLI side: the user's config still applies to the rest). */
export function sshOptions(identity: SshIdentity, vmName: string, port: number): string[] {
  return [
    ...GUEST_SAFE_SSH_OPTIONS.flatMap((o) => ["-o", o]),
    "-i",
    identity.privateKey,
    "-p",
    String(port),
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    `UserKnownHostsFile=${identity.knownHosts}`,
    // banger's own file, in clear whatever ssh_config says: the aliases are VM names banger.db
    // lists anyway, and `ssh-keygen -F <name>.vm` / the file itself stay readable to the user.
    "-o",
    "HashKnownHosts=no",
    "-o",
    `HostKeyAlias=${hostKeyAlias(vmName)}`,
    "-o",
    "StrictHostKeyChecking=accept-new",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
  ];
}

/** Variables that hand the user's ssh agent to whoever reads them; the daemon never holds them. */
export const AGENT_ENV = ["SSH_AUTH_SOCK", "SSH_AGENT_PID"] as const;

/** `env` without the user's agent: what bangerd is started with (and what it leaves itself at start). */
export function withoutAgent(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const k of AGENT_ENV) delete out[k];
  return out;
}

/** The daemon's ssh: no config file at all (-F /dev/null), then the same options as the CLI's. */
export function daemonSshOptions(identity: SshIdentity, vmName: string, port: number): string[] {
  return ["-F", "/dev/null", ...sshOptions(identity, vmName, port)];
}

/** Forget a deleted VM's host key so a new VM of the same name is not refused. */
export async function forgetHostKey(
  identity: SshIdentity,
  vmName: string,
  runner: CommandRunner,
): Promise<void> {
  await runner
    .run("ssh-keygen", ["-R", hostKeyAlias(vmName), "-f", identity.knownHosts])
    .catch(() => undefined);
  await fsp.rm(`${identity.knownHosts}.old`, { force: true });
}

/** POSIX single-quoting: ssh joins its arguments with spaces, so each must survive the remote shell. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}
