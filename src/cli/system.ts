import { Command } from "@commander-js/extra-typings";
import { describeGroup, pending } from "./context.js";

const SYSTEM_WORK = "the systemd install work (not scheduled yet)";

export function systemCommand(): Command {
  const system = describeGroup(new Command("system"), {
    purpose:
      "Install banger as a service: bangerd as a systemd user unit and banger-helper as a narrow root helper for bridge networking.",
    examples: ["sudo banger system install", "banger system status"],
    next: "'banger doctor' confirms the helper is reachable.",
  });
  system
    .command("install")
    .description("Install the systemd units")
    .action(pending("banger system install", SYSTEM_WORK));
  system
    .command("uninstall")
    .description("Remove the systemd units")
    .action(pending("banger system uninstall", SYSTEM_WORK));
  system
    .command("status")
    .description("Show the installed units' state")
    .option("--json", "print JSON")
    .action(pending("banger system status", SYSTEM_WORK));
  return system as unknown as Command;
}
