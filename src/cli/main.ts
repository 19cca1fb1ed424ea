import { CommanderError } from "@commander-js/extra-typings";
import { BangerError } from "../api/errors.js";
import { hostResources } from "../config/vm-defaults.js";
import { resolveLayout } from "../paths/layout.js";
import { visibleLines } from "../util/terminal-text.js";
import { bangerVersion } from "../version.js";
import { ExitStatus, type CliDeps } from "./context.js";
import { buildProgram } from "./program.js";

export function realCliDeps(): CliDeps {
  const layout = resolveLayout();
  const env = process.env;
  const out = { stdout: process.stdout, stderr: process.stderr };
  const connectDeps = { layout, env, notice: (line: string) => process.stderr.write(`${line}\n`) };
  // The RPC library loads only for commands that talk to the daemon.
  const client = () => import("./client.js");
  return {
    out,
    env,
    layout,
    version: bangerVersion(),
    host: hostResources(),
    connect: async () => (await client()).connectOrStart(connectDeps),
    tryConnect: async () => (await client()).tryConnect(layout),
    startDaemon: async () => (await client()).startDaemon(connectDeps),
  };
}

/** Runs the CLI and returns the exit status; never lets an error escape as a stack trace. */
export async function runCli(argv: string[], deps: CliDeps): Promise<number> {
  try {
    // Only the groups this command line needs are loaded.
    const program = await buildProgram(deps, argv.slice(2));
    program.exitOverride();
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof ExitStatus) return err.status;
    if (err instanceof CommanderError) {
      // Help and --version "fail" with status 0; usage errors were already printed by commander.
      return err.exitCode;
    }
    const color = deps.out.stderr.isTTY === true;
    const pc = color ? (await import("picocolors")).default : null;
    const red = pc ? pc.red : (s: string) => s;
    const dim = pc ? pc.dim : (s: string) => s;
    // Messages may quote a guest's stderr: its control characters are shown, not obeyed.
    const message = visibleLines(err instanceof Error ? err.message : String(err));
    deps.out.stderr.write(`${red("banger: error:")} ${message}\n`);
    if (err instanceof BangerError && err.hint)
      deps.out.stderr.write(`${dim("  hint:")} ${visibleLines(err.hint)}\n`);
    else if (!(err instanceof BangerError) && err instanceof Error && deps.env.BANGER_DEBUG) {
      deps.out.stderr.write(`${err.stack ?? ""}\n`);
    }
    return 1;
  }
}

/** Entry point used by bin/banger. */
export async function main(): Promise<void> {
  process.exitCode = await runCli(process.argv, realCliDeps());
}
