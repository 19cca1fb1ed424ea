import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import type { Layout } from "../paths/layout.js";
import type { DaemonClient } from "./client.js";
import type { Out } from "./output.js";

/** Everything a CLI command touches outside itself; tests pass their own. */
export interface CliDeps {
  out: Out;
  env: NodeJS.ProcessEnv;
  layout: Layout;
  version: string;
  host: { cpus: number; memoryBytes: number };
  /** Connect to bangerd, starting it when it is not running. */
  connect(): Promise<DaemonClient>;
  /** Connect only if bangerd already runs. */
  tryConnect(): Promise<DaemonClient | null>;
  /** Start bangerd in the background; resolves to its pid once its socket answers. */
  startDaemon(): Promise<number>;
}

/** Run `fn` with a daemon connection that is always closed afterwards. */
export async function withDaemon<T>(
  deps: CliDeps,
  fn: (client: DaemonClient) => Promise<T>,
): Promise<T> {
  const client = await deps.connect();
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

export interface GroupHelp {
  /** What the group is for, one or two sentences. */
  purpose: string;
  /** Runnable examples, most common first. */
  examples: string[];
  /** What to do after the 80% command. */
  next: string;
}

/** Each group's landing help: purpose, the command most people want, what comes next. */
export function describeGroup<C extends CommandUnknownOpts>(cmd: C, help: GroupHelp): C {
  cmd.description(help.purpose);
  cmd.addHelpText(
    "after",
    `\nExamples:\n${help.examples.map((e) => `  $ ${e}`).join("\n")}\n\nNext: ${help.next}\n`,
  );
  return cmd;
}

/** Raised by commands that must exit with a specific status (doctor, a remote command's status). */
export class ExitStatus extends Error {
  constructor(readonly status: number) {
    super(`exit ${status}`);
  }
}
