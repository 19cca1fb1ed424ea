// What OpenSSH would really do with a set of arguments: `ssh -G` prints the effective
// configuration (after every config file, Include and Match) without connecting.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import {
  daemonSshOptions,
  endpointSshArgs,
  guestSshArgs,
  type SshIdentity,
} from "../../src/guest/ssh.js";
import { GuestShell } from "../../src/guest/shell.js";
import { createCommandRunner } from "../../src/system/runner.js";

const run = promisify(execFile);

export const testIdentity: SshIdentity = {
  privateKey: "/nonexistent/banger/id_ed25519",
  publicKey: "/nonexistent/banger/id_ed25519.pub",
  knownHosts: "/nonexistent/banger/known_hosts",
};

/** Each builder's argv up to the destination, as banger runs it (the daemon's and the CLI's). */
export const sshBuilders: Record<string, () => string[]> = {
  "daemon guestSshArgs": () =>
    guestSshArgs({
      vmId: "0",
      vmName: "box",
      host: "127.0.0.1",
      port: 2222,
      identity: testIdentity,
    }),
  // Its argv up to the destination: the command it is given comes last.
  "daemon GuestShell": () =>
    new GuestShell(createCommandRunner())
      .argv(
        { vmId: "0", vmName: "box", host: "127.0.0.1", port: 2222, identity: testIdentity },
        "true",
      )
      .slice(0, -1),
  "daemon daemonSshOptions": () => [
    ...daemonSshOptions(testIdentity, "box", 2222),
    "root@127.0.0.1",
  ],
  "cli endpointSshArgs": () =>
    endpointSshArgs("box", {
      host: "127.0.0.1",
      port: 2222,
      user: "root",
      identityFile: testIdentity.privateKey,
      knownHostsFile: testIdentity.knownHosts,
    }),
};

/**
 * The effective options (lower-case keys, every value) of `args` when `userConfig` is the
 * user's ~/.ssh/config. ssh reads ~/.ssh/config from the passwd entry, not $HOME, so the
 * user's file is given with a leading -F (a later -F, like the daemon's -F /dev/null, wins).
 */
export async function effectiveSsh(
  args: string[],
  userConfig: string,
  env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? "/usr/bin:/bin" },
): Promise<Map<string, string[]>> {
  const { stdout } = await run("ssh", ["-G", "-F", userConfig, ...args], { env, timeout: 10_000 });
  const out = new Map<string, string[]>();
  for (const line of stdout.split("\n")) {
    const sp = line.indexOf(" ");
    if (sp <= 0) continue;
    const key = line.slice(0, sp);
    out.set(key, [...(out.get(key) ?? []), line.slice(sp + 1)]);
  }
  return out;
}
