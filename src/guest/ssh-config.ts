import fsp from "node:fs/promises";
import path from "node:path";

export const BLOCK_START = "# >>> banger: managed by 'banger ssh-config'; do not edit >>>";
export const BLOCK_END = "# <<< banger <<<";

/** banger's own ssh config: `ssh <name>.vm` goes through banger to the VM, with banger's key and known_hosts. */
export function bangerSshConfig(opts: {
  bangerBin: string;
  identityFile: string;
  knownHostsFile: string;
}): string {
  return [
    "# Written by banger. 'banger ssh-config --uninstall' removes the Include of this file.",
    "Host *.vm",
    "  User root",
    `  IdentityFile ${opts.identityFile}`,
    "  IdentitiesOnly yes",
    `  UserKnownHostsFile ${opts.knownHostsFile}`,
    "  HashKnownHosts no",
    "  StrictHostKeyChecking accept-new",
    // Above the user's own Host blocks (first value wins): a guest never gets the agent, X11,
    // forwards from the config, a local command or a shared master connection.
    "  ForwardAgent no",
    "  ForwardX11 no",
    "  ForwardX11Trusted no",
    "  ClearAllForwardings yes",
    "  PermitLocalCommand no",
    "  LocalCommand none",
    "  ControlMaster no",
    "  ControlPath none",
    "  ControlPersist no",
    "  IdentityAgent none",
    // The proxy asks bangerd where the VM is, so this works with bridge and user-mode networking alike.
    `  ProxyCommand ${opts.bangerBin} internal ssh-proxy %h`,
    "",
  ].join("\n");
}

/** ~/.ssh/config with banger's block at the top (an Include below a Host line would only apply to that host). */
export function withBlock(current: string, include: string): string {
  const without = withoutBlock(current);
  const block = `${BLOCK_START}\nInclude ${include}\n${BLOCK_END}\n`;
  return without.trim() === "" ? block : `${block}\n${without}`;
}

export function withoutBlock(current: string): string {
  const start = current.indexOf(BLOCK_START);
  if (start < 0) return current;
  const end = current.indexOf(BLOCK_END, start);
  if (end < 0) return current;
  let after = current.slice(end + BLOCK_END.length);
  if (after.startsWith("\n")) after = after.slice(1);
  if (after.startsWith("\n")) after = after.slice(1);
  return current.slice(0, start) + after;
}

export async function installSshConfig(
  userSshDir: string,
  bangerConfigFile: string,
  content: string,
): Promise<string> {
  await fsp.mkdir(path.dirname(bangerConfigFile), { recursive: true, mode: 0o700 });
  await fsp.writeFile(bangerConfigFile, content, { mode: 0o600 });
  await fsp.mkdir(userSshDir, { recursive: true, mode: 0o700 });
  const file = path.join(userSshDir, "config");
  const current = await fsp.readFile(file, "utf8").catch(() => "");
  const next = withBlock(current, bangerConfigFile);
  if (next !== current) {
    // Write beside and rename: a crash never leaves a half-written ~/.ssh/config.
    await fsp.writeFile(`${file}.banger-tmp`, next, { mode: 0o600 });
    await fsp.rename(`${file}.banger-tmp`, file);
  }
  return file;
}

export async function uninstallSshConfig(userSshDir: string): Promise<boolean> {
  const file = path.join(userSshDir, "config");
  const current = await fsp.readFile(file, "utf8").catch(() => null);
  if (current === null) return false;
  const next = withoutBlock(current);
  if (next === current) return false;
  await fsp.writeFile(`${file}.banger-tmp`, next, { mode: 0o600 });
  await fsp.rename(`${file}.banger-tmp`, file);
  return true;
}
