import { Command, type CommandUnknownOpts } from "@commander-js/extra-typings";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { CliDeps } from "./context.js";

/**
 * Shell completion: each shell's script asks `banger __complete -- <words>` for
 * candidates, so there is one completion engine and it always matches the real
 * command tree. It never starts the daemon: names come only from a running one.
 */
const SCRIPTS = {
  bash: `# banger completion for bash: eval "$(banger completion bash)"
_banger() {
  local IFS=$'\\n'
  COMPREPLY=( $(banger __complete -- "\${COMP_WORDS[@]:1:$COMP_CWORD}" 2>/dev/null) )
}
complete -o default -F _banger banger
`,
  zsh: `#compdef banger
# banger completion for zsh: eval "$(banger completion zsh)"
_banger() {
  local -a candidates
  candidates=("\${(@f)$(banger __complete -- "\${(@)words[2,CURRENT]}" 2>/dev/null)}")
  compadd -a candidates
}
compdef _banger banger
`,
  fish: `# banger completion for fish: banger completion fish | source
complete -c banger -f -a '(banger __complete -- (commandline -opc)[2..-1] (commandline -ct))'
`,
} as const;

type Shell = keyof typeof SCRIPTS;

export function completionCommand(program: Command, deps: CliDeps): Command {
  const completion = new Command("completion")
    .description("Print a shell completion script (bash, zsh or fish)")
    .argument("<shell>", "bash, zsh or fish")
    .addHelpText(
      "after",
      `
Examples:
  $ eval "$(banger completion bash)"         # this shell; add the line to ~/.bashrc to keep it
  $ banger completion zsh > "\${fpath[1]}/_banger"
  $ banger completion fish | source
`,
    )
    .action((shell) => {
      if (!(shell in SCRIPTS)) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          `unknown shell "${shell}"`,
          "use one of: bash, zsh, fish",
        );
      }
      deps.out.stdout.write(SCRIPTS[shell as Shell]);
    });

  // Hidden: the engine the scripts call.
  const complete = new Command("__complete")
    .argument("[words...]")
    .action(async (words: string[]) => {
      const candidates = await completeWords(program, words, deps);
      if (candidates.length > 0) deps.out.stdout.write(`${candidates.join("\n")}\n`);
    });
  program.addCommand(complete as unknown as Command, { hidden: true });
  return completion as unknown as Command;
}

/** Which daemon list names a command's positional argument. */
function nameSource(
  path: string[],
): "vm.list" | "image.list" | "kernel.list" | "snapshot.list" | null {
  const [group, verb] = path;
  if (
    verb === undefined ||
    [
      "list",
      "ls",
      "create",
      "run",
      "prune",
      "build",
      "pull",
      "register",
      "import",
      "cache",
    ].includes(verb)
  ) {
    return null;
  }
  if (group === "vm") return "vm.list";
  if (group === "image") return "image.list";
  if (group === "kernel") return "kernel.list";
  if (group === "snapshot") return "snapshot.list";
  return null;
}

/** Candidates for the last word, given the words before it. */
export async function completeWords(
  program: CommandUnknownOpts,
  words: string[],
  deps: CliDeps,
): Promise<string[]> {
  const current = words.at(-1) ?? "";
  let cmd: CommandUnknownOpts = program;
  const path: string[] = [];
  for (const word of words.slice(0, -1)) {
    const sub = cmd.commands.find((c) => c.name() === word || c.aliases().includes(word));
    if (sub) {
      cmd = sub;
      path.push(sub.name());
    }
  }
  let candidates: string[];
  if (current.startsWith("-")) {
    candidates = [...cmd.options.map((o) => o.long).filter((l): l is string => !!l), "--help"];
  } else if (cmd.commands.length > 0) {
    candidates = cmd.commands.filter((c) => !c.name().startsWith("__")).map((c) => c.name());
  } else if (path[0] === "completion") {
    candidates = Object.keys(SCRIPTS);
  } else {
    candidates = await namesFromDaemon(nameSource(path), deps);
  }
  return candidates.filter((c) => c.startsWith(current)).sort();
}

async function namesFromDaemon(
  source: ReturnType<typeof nameSource>,
  deps: CliDeps,
): Promise<string[]> {
  if (!source) return [];
  const client = await deps.tryConnect().catch(() => null);
  if (!client) return [];
  try {
    const rows: Array<{ name: string }> = await client.call(source, {});
    return rows.map((r) => r.name);
  } catch {
    return [];
  } finally {
    client.close();
  }
}
