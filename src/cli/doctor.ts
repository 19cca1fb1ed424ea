import fs from "node:fs/promises";
import { Command } from "@commander-js/extra-typings";
import os from "node:os";
import { ExitStatus, type CliDeps } from "./context.js";
import { printJson } from "./output.js";

export function doctorCommand(deps: CliDeps): Command {
  return new Command("doctor")
    .description("Check what this machine can do and how to fix what is missing")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExit status is 1 when any check fails (warnings do not count).\n\nExamples:\n  $ banger doctor\n  $ banger doctor --json | jq '.checks[] | select(.status != \"ok\")'\n",
    )
    .action(async (opts) => {
      // The checks load only when run, not whenever the command tree is built (help, completion).
      const { readConfigSync } = await import("../config/config.js");
      const { describeVmDefaults, resolveVmDefaults } = await import("../config/vm-defaults.js");
      const { probePrivileged } = await import("../net/privileged-mode.js");
      const { canOpenReadWrite, realAccelDeps } = await import("../system/accel.js");
      const { defaultChecks, formatReport, runChecks } = await import("../system/doctor.js");
      const { createCommandRunner } = await import("../system/runner.js");
      const checks = defaultChecks({
        runner: createCommandRunner(deps.env),
        accel: realAccelDeps(),
        canOpenRw: canOpenReadWrite,
        nodeVersion: process.version,
        guestToolkit: async () => {
          const { hostToolkit } = await import("../guest/toolkit.js");
          const { files } = await hostToolkit(createCommandRunner(deps.env));
          let bytes = 0;
          for (const f of files) bytes += (await fs.stat(f.source)).size;
          return { files: files.length, bytes };
        },
        configFile: deps.layout.configFile,
        configExists: () =>
          fs.access(deps.layout.configFile).then(
            () => true,
            () => false,
          ),
        // A broken config is itself worth reporting: the check fails with the parse error.
        describeVmDefaults: async () =>
          describeVmDefaults(resolveVmDefaults(readConfigSync(deps.layout.configFile), deps.host)),
        probePrivileged: async () => {
          const network = readConfigSync(deps.layout.configFile).network;
          return probePrivileged({
            env: deps.env,
            uid: process.getuid?.() ?? 0,
            configuredSocket: network.helperSocket,
            network,
          });
        },
        userName: os.userInfo().username,
        daemonNetwork: async () => {
          const client = await deps.tryConnect().catch(() => null);
          if (!client) return null;
          try {
            return (await client.call("daemon.status", {})).network ?? null;
          } finally {
            client.close();
          }
        },
      });
      const report = await runChecks(checks);
      if (opts.json) printJson(deps.out, report);
      else deps.out.stdout.write(formatReport(report, { color: deps.out.stdout.isTTY === true }));
      if (!report.ok) throw new ExitStatus(1);
    }) as unknown as Command;
}
