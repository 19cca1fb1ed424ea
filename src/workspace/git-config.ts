import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { CommandRunner } from "../system/runner.js";
import type { HostRepo } from "./repo.js";

/** The guest's config travels as one argument of the import script: this keeps it well under ARG_MAX. */
export const GIT_CONFIG_MAX_BYTES = 32 * 1024;

/** The host repo's own config (never ~/.gitconfig, never an include), scrubbed for the guest. */
export async function scrubbedGitConfig(runner: CommandRunner, repo: HostRepo): Promise<string> {
  const file = path.join(repo.commonDir, "config");
  const r = await runner.run("git", ["config", "--file", file, "--no-includes", "--list", "-z"], {
    timeoutMs: 60_000,
  });
  // No config at all is a config with nothing to keep.
  const listed = r.code === 0 ? r.stdout : "";
  const config = scrubGitConfig(
    listed
      .split("\0")
      .filter((e) => e !== "")
      .map((e) => {
        const nl = e.indexOf("\n");
        return nl < 0 ? { key: e, value: null } : { key: e.slice(0, nl), value: e.slice(nl + 1) };
      }),
  );
  if (Buffer.byteLength(config) > GIT_CONFIG_MAX_BYTES)
    throw new BangerError(
      ErrorCode.InvalidParams,
      `the scrubbed .git/config of ${repo.top} is larger than ${GIT_CONFIG_MAX_BYTES / 1024} KiB (remotes and branches)`,
      "remove remotes or branch sections you do not need ('git remote remove <name>'), or import with --from",
    );
  return config;
}

// What of the host's config the guest gets, by key (section.key or section.<sub>.key, lower-case
// names). Everything else stays home: credential.*, http.* (extraHeader tokens, cookie files,
// proxies), include/includeIf, url.*.insteadOf, core.sshCommand, core.hooksPath,
// core.fsmonitor, filter/diff/merge drivers, aliases, gpg and signing settings, ...
const KEEP_PLAIN = new Set([
  "core.repositoryformatversion",
  "core.filemode",
  "core.symlinks",
  "core.ignorecase",
  "core.precomposeunicode",
  "core.logallrefupdates",
  "core.autocrlf",
  "core.eol",
  "core.safecrlf",
  "extensions.objectformat",
  "extensions.refstorage",
  "extensions.partialclone",
  "user.name",
  "user.email",
]);
const KEEP_REMOTE = new Set([
  "url",
  "pushurl",
  "fetch",
  "push",
  "tagopt",
  "mirror",
  "prune",
  "promisor",
  "partialclonefilter",
]);
const KEEP_BRANCH = new Set(["remote", "pushremote", "merge", "rebase"]);

/** A remote URL without credentials: http(s)/ftp(s) lose their whole userinfo, others the password. */
export function stripUrlCredentials(url: string): string {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*@)?(.*)$/s.exec(url);
  if (!m || !m[2]) return url;
  const [, scheme, userinfo, rest] = m as unknown as [string, string, string, string];
  if (/^(https?|ftps?)$/i.test(scheme)) return `${scheme}://${rest}`;
  const user = userinfo.slice(0, -1).split(":")[0]!;
  return `${scheme}://${user ? `${user}@` : ""}${rest}`;
}

/**
 * The guest's .git/config from the host config's entries (`git config --list`): only what a
 * working clone needs (format and checkout settings, remotes' URLs without credentials and
 * refspecs, branch tracking, the committer's name and e-mail), as git config text.
 */
export function scrubGitConfig(entries: Array<{ key: string; value: string | null }>): string {
  const sections = new Map<string, string[]>();
  const add = (header: string, name: string, value: string | null) => {
    const lines = sections.get(header) ?? [];
    sections.set(header, lines);
    lines.push(value === null ? `\t${name}` : `\t${name} = ${quoteConfigValue(value)}`);
  };
  for (const { key, value } of entries) {
    const first = key.indexOf(".");
    const last = key.lastIndexOf(".");
    if (first < 0) continue;
    const section = key.slice(0, first).toLowerCase();
    const name = key.slice(last + 1).toLowerCase();
    if (!/^[a-z0-9-]+$/.test(section) || !/^[a-z][a-z0-9-]*$/.test(name)) continue;
    if (first === last) {
      if (KEEP_PLAIN.has(`${section}.${name}`)) add(`[${section}]`, name, value);
      continue;
    }
    const sub = key.slice(first + 1, last);
    if (/[\x00-\x1f\x7f]/.test(sub)) continue;
    const header = `[${section} "${sub.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"]`;
    if (section === "remote" && KEEP_REMOTE.has(name))
      add(header, name, value !== null && /url$/.test(name) ? stripUrlCredentials(value) : value);
    else if (section === "branch" && KEEP_BRANCH.has(name)) add(header, name, value);
  }
  return [...sections].map(([h, lines]) => `${h}\n${lines.join("\n")}\n`).join("");
}

/** A config value git reads back exactly: always quoted, with its escapes. */
function quoteConfigValue(value: string): string {
  const escaped = value
    .replace(/\\/g, "\\\\")
    .replace(/"/g, '\\"')
    .replace(/\n/g, "\\n")
    .replace(/\t/g, "\\t")
    .replace(/[\x00-\x08\x0b-\x1f\x7f]/g, "");
  return `"${escaped}"`;
}
