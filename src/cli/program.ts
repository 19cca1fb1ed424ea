import { Command } from "@commander-js/extra-typings";
import { completionCommand } from "./completion.js";
import type { CliDeps } from "./context.js";
import { daemonCommand } from "./daemon.js";
import { doctorCommand } from "./doctor.js";
import { imageCommand } from "./image.js";
import { internalCommand } from "./internal.js";
import { kernelCommand } from "./kernel.js";
import { sshConfigCommand } from "./ssh-config.js";
import { systemCommand } from "./system.js";
import { versionCommand } from "./version.js";
import { vmCommand } from "./vm.js";

/** The whole `banger` command tree; pure construction, nothing runs until parse. */
export function buildProgram(deps: CliDeps): Command {
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
  program.addCommand(vmCommand(deps));
  program.addCommand(imageCommand(deps));
  program.addCommand(kernelCommand(deps));
  program.addCommand(systemCommand(deps));
  program.addCommand(daemonCommand(deps));
  program.addCommand(sshConfigCommand(deps));
  program.addCommand(doctorCommand(deps));
  program.addCommand(completionCommand(program as unknown as Command, deps));
  program.addCommand(versionCommand(deps));
  program.addCommand(internalCommand(deps), { hidden: true });
  return program as unknown as Command;
}
