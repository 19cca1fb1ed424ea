import os from "node:os";
import path from "node:path";
import { Command } from "@commander-js/extra-typings";
import { BangerError, ErrorCode } from "../api/errors.js";
import { bangerSshConfig, installSshConfig, uninstallSshConfig } from "../guest/ssh-config.js";
import type { CliDeps } from "./context.js";

export function sshConfigCommand(deps: CliDeps): Command {
  const cmd = new Command("ssh-config")
    .description("Manage the block in ~/.ssh/config that makes 'ssh <name>.vm' work")
    .option("--install", "add the Include block to ~/.ssh/config")
    .option("--uninstall", "remove it")
    .option("--print", "print banger's ssh config without changing anything (the default)")
    .addHelpText(
      "after",
      "\nExamples:\n  $ banger ssh-config --install\n  $ ssh dev.vm\n  $ scp file.txt dev.vm:\n",
    )
    .action(async (opts) => {
      if ([opts.install, opts.uninstall, opts.print].filter(Boolean).length > 1) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          "--install, --uninstall and --print are mutually exclusive",
        );
      }
      const userSshDir = path.join(deps.env.HOME ?? os.homedir(), ".ssh");
      const bangerFile = path.join(deps.layout.sshDir, "config");
      const content = bangerSshConfig({
        bangerBin: path.resolve(process.argv[1] ?? "banger"),
        identityFile: path.join(deps.layout.sshDir, "id_ed25519"),
        knownHostsFile: path.join(deps.layout.sshDir, "known_hosts"),
      });
      if (opts.install) {
        const file = await installSshConfig(userSshDir, bangerFile, content);
        deps.out.stdout.write(
          `added banger's Include to ${file}: 'ssh <name>.vm' now reaches your VMs\n`,
        );
      } else if (opts.uninstall) {
        const removed = await uninstallSshConfig(userSshDir);
        deps.out.stdout.write(
          removed
            ? `removed banger's block from ${path.join(userSshDir, "config")}\n`
            : "banger's block was not installed\n",
        );
      } else {
        deps.out.stdout.write(content);
      }
    });
  return cmd as unknown as Command;
}
