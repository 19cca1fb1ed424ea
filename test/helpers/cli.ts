import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The real launcher, as users run it. */
export const bangerBin = path.resolve(fileURLToPath(new URL("../../bin/banger", import.meta.url)));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface BangerCli {
  /** Runs `banger <args>`; a non-zero exit is a result, not an exception. */
  cli(...args: string[]): Promise<CliResult>;
  /** Same, and the test fails with banger's stderr unless it exits 0. */
  ok(...args: string[]): Promise<CliResult>;
}

/**
 * `banger` for e2e tests. `env` is read at each call (test homes are made in
 * `before`); `wrap` may run it as another user (setpriv).
 */
export function bangerCli(
  env: () => NodeJS.ProcessEnv,
  wrap: (cmd: string, args: string[]) => [string, string[]] = (cmd, args) => [cmd, args],
): BangerCli {
  const cli = async (...args: string[]): Promise<CliResult> => {
    const [cmd, argv] = wrap(bangerBin, args);
    try {
      const { stdout, stderr } = await run(cmd, argv, {
        env: env(),
        timeout: 600_000,
        maxBuffer: 64 * 2 ** 20,
      });
      return { code: 0, stdout, stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      if (typeof e.code !== "number") throw err;
      return { code: e.code, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
    }
  };
  const ok = async (...args: string[]): Promise<CliResult> => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `banger ${args.join(" ")} failed:\n${r.stderr}`);
    return r;
  };
  return { cli, ok };
}

/**
 * Kills and deletes every VM of a home. VMs outlive their daemon by design, so a
 * test or benchmark that fails half-way must do this before removing its home.
 */
export async function deleteEveryVm(env: NodeJS.ProcessEnv): Promise<void> {
  const { cli } = bangerCli(() => env);
  const list = await cli("vm", "list", "--json");
  if (list.code !== 0) return;
  const names = (JSON.parse(list.stdout) as Array<{ name: string }>).map((v) => v.name);
  for (const name of names) await cli("vm", "kill", name);
  if (names.length > 0) await cli("vm", "delete", ...names);
}
