import { Command } from "@commander-js/extra-typings";
import { pending } from "./context.js";

export function sshConfigCommand(): Command {
  const cmd = new Command("ssh-config")
    .description("Manage the block in ~/.ssh/config that makes 'ssh <name>.vm' work")
    .option("--install", "add the Include block to ~/.ssh/config")
    .option("--uninstall", "remove it")
    .option("--print", "print banger's ssh config without changing anything")
    .addHelpText("after", "\nExamples:\n  $ banger ssh-config --install\n  $ ssh dev.vm\n")
    .action(pending("banger ssh-config", "the VM networking work (issue #5)"));
  return cmd as unknown as Command;
}
