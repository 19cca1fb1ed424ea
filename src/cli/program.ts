import { Command } from "@commander-js/extra-typings";
import type { CliDeps } from "./context.js";

/** Builds one top-level command; `program` is the root, for commands that walk the tree. */
type GroupFactory = (deps: CliDeps, program: Command) => Command;

interface Group {
  /** The command's name as typed; read before its module loads, so it must be what `load` builds. */
  name: string;
  /** Other first words that run a command this group's module adds (the completion engine). */
  alsoRuns?: string[];
  hidden?: boolean;
  load(): Promise<GroupFactory>;
}

// Each group's module loads only when its command runs: the CLI is called hundreds of times per
// task, and most of its start-up time was loading the modules of commands it did not run.
// Definition order is help order.
const GROUPS: readonly Group[] = [
  { name: "vm", load: async () => (await import("./vm.js")).vmCommand },
  { name: "image", load: async () => (await import("./image.js")).imageCommand },
  { name: "kernel", load: async () => (await import("./kernel.js")).kernelCommand },
  { name: "snapshot", load: async () => (await import("./snapshot.js")).snapshotCommand },
  { name: "system", load: async () => (await import("./system.js")).systemCommand },
  { name: "daemon", load: async () => (await import("./daemon.js")).daemonCommand },
  { name: "ssh-config", load: async () => (await import("./ssh-config.js")).sshConfigCommand },
  { name: "doctor", load: async () => (await import("./doctor.js")).doctorCommand },
  {
    name: "completion",
    alsoRuns: ["__complete"],
    load: async () => {
      const { completionCommand } = await import("./completion.js");
      return (deps, program) => completionCommand(program, deps);
    },
  },
  { name: "version", load: async () => (await import("./version.js")).versionCommand },
  {
    name: "internal",
    hidden: true,
    load: async () => (await import("./internal.js")).internalCommand,
  },
];

function groupRunning(word: string | undefined): Group | undefined {
  return GROUPS.find((g) => g.name === word || g.alsoRuns?.includes(word ?? ""));
}

/**
 * The groups a command line needs: the one its first word names; for the completion engine, also
 * the group it completes inside. Everything else (no command, help, a typo to suggest a fix for,
 * completing a group's own name) needs the whole tree.
 */
export function groupsFor(args: readonly string[]): readonly Group[] {
  const group = groupRunning(args[0]);
  if (!group) return GROUPS;
  if (args[0] !== "__complete") return [group];
  const words = args[1] === "--" ? args.slice(2) : args.slice(1);
  const inside = words.length >= 2 ? groupRunning(words[0]) : undefined;
  if (!inside) return GROUPS;
  return GROUPS.filter((g) => g === group || g === inside);
}

function rootCommand(deps: CliDeps): Command {
  const program = new Command("banger")
    .description("Throwaway Linux microVMs in one command.")
    .version(deps.version, "-V, --version", "print banger's version")
    .showSuggestionAfterError(true)
    // Group options stop at the subcommand, so `vm run` sees the `--` its user typed.
    .enablePositionalOptions()
    .configureOutput({
      writeOut: (s) => deps.out.stdout.write(s),
      writeErr: (s) => deps.out.stderr.write(s),
    })
    .addHelpText(
      "after",
      `
Start here:
  $ banger vm run ./repo -- make test   # fresh VM, your repo inside, exit with the command's status
  $ banger vm run --rm                  # throwaway shell
  $ banger doctor                       # what this machine can do

Every group has its own help: banger vm --help, banger image --help, ...
`,
    );
  return program as unknown as Command;
}

/**
 * The `banger` command tree; pure construction, nothing runs until parse. Given `args` (the words
 * after `banger`), only the groups those words need; without, every group (docs, tests).
 */
export async function buildProgram(deps: CliDeps, args?: readonly string[]): Promise<Command> {
  const program = rootCommand(deps);
  const groups = args ? groupsFor(args) : GROUPS;
  const factories = await Promise.all(groups.map((g) => g.load()));
  groups.forEach((group, i) => {
    program.addCommand(factories[i]!(deps, program), { hidden: group.hidden === true });
  });
  return program;
}
