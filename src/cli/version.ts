import { Command } from "@commander-js/extra-typings";
import type { CliDeps } from "./context.js";
import { printJson } from "./output.js";

export function versionCommand(deps: CliDeps): Command {
  return new Command("version")
    .description("Print banger's version (and the running daemon's, without starting one)")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const client = await deps.tryConnect();
      const daemon = client
        ? await client.call("daemon.ping", {}).finally(() => client.close())
        : null;
      const info = {
        banger: deps.version,
        node: process.versions.node,
        daemon: daemon?.version ?? null,
      };
      if (opts.json) return printJson(deps.out, info);
      deps.out.stdout.write(`banger ${info.banger} (node ${info.node})\n`);
      if (daemon && daemon.version !== deps.version) {
        deps.out.stdout.write(
          `bangerd ${daemon.version} is running: restart it with 'banger daemon stop'\n`,
        );
      }
    }) as unknown as Command;
}
