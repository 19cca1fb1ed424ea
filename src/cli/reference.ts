import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { resolveLayout } from "../paths/layout.js";
import type { CliDeps } from "./context.js";

/** Every visible command with its full path, depth-first in definition order. */
export function walkCommands(
  cmd: CommandUnknownOpts,
  prefix: string[] = [],
): Array<{ path: string[]; cmd: CommandUnknownOpts }> {
  const out: Array<{ path: string[]; cmd: CommandUnknownOpts }> = [];
  // Hidden commands (internal tools, the completion engine) stay out of the reference.
  for (const sub of cmd.createHelp().visibleCommands(cmd)) {
    if (sub.name() === "help") continue;
    const path = [...prefix, sub.name()];
    out.push({ path, cmd: sub });
    out.push(...walkCommands(sub, path));
  }
  return out;
}

function usage(path: string[], cmd: CommandUnknownOpts): string {
  const aliases = cmd.aliases().length > 0 ? ` (alias: ${cmd.aliases().join(", ")})` : "";
  return `banger ${path.join(" ")} ${cmd.usage()}`.trim() + aliases;
}

/** The README's compact table: one line per command. */
export function referenceTable(program: CommandUnknownOpts): string {
  const rows = walkCommands(program).map(
    ({ path, cmd }) => `| \`${usage(path, cmd).replace(/\|/g, "\\|")}\` | ${cmd.description()} |`,
  );
  return ["| command | what it does |", "| --- | --- |", ...rows].join("\n") + "\n";
}

/** docs/commands.md: the real --help of every command. */
export function referencePage(program: CommandUnknownOpts): string {
  const parts = [
    "# Command reference",
    "",
    "Generated from `banger --help` output by `make docs`; a test keeps it current.",
    "",
  ];
  parts.push("## banger", "", "```", helpWithExtras(program).trimEnd(), "```", "");
  for (const { path, cmd } of walkCommands(program)) {
    parts.push(`## banger ${path.join(" ")}`, "", "```", helpWithExtras(cmd).trimEnd(), "```", "");
  }
  return parts.join("\n");
}

/** helpInformation() omits addHelpText blocks; capture the full text as a user sees it. */
function helpWithExtras(cmd: CommandUnknownOpts): string {
  let text = "";
  cmd.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
  cmd.outputHelp();
  return text;
}

/** Fixed, machine-independent deps so the generated reference is the same everywhere. */
export function referenceDeps(): CliDeps {
  const sink = { write: () => true } as unknown as CliDeps["out"]["stdout"];
  const unreachable = async (): Promise<never> => {
    throw new Error("the reference generator never talks to a daemon");
  };
  return {
    out: { stdout: sink, stderr: sink },
    env: {},
    layout: resolveLayout({}, "/home/you"),
    version: "0.0.0",
    host: { cpus: 8, memoryBytes: 16 * 1024 ** 3 },
    connect: unreachable,
    tryConnect: async () => null,
    startDaemon: unreachable,
  };
}
