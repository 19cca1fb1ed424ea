import { Command } from "@commander-js/extra-typings";
import { formatSizeBytes } from "../util/size.js";
import { withDaemon, type CliDeps } from "./context.js";
import { createProgressRenderer } from "./progress.js";

/** `vm snapshot` and `vm fork`: the VM verbs that save a running VM (the snapshot group lists them). */
export function vmSnapshotCommands(deps: CliDeps): Command[] {
  const snapshot = new Command("snapshot")
    .description("Save a running VM's memory and disks as a snapshot, then let it run on")
    .argument("<vm>")
    .option("--name <name>", "the snapshot's name (default: <vm>-snap-<n>)")
    .option("--stop", "leave the VM stopped afterwards")
    .addHelpText(
      "after",
      `
Examples:
  $ banger vm snapshot dev --name base
  $ banger vm create --from-snapshot base --name try1   # a clone, restored instead of booted
  $ banger snapshot list
`,
    )
    .action(async (vm, opts) => {
      const progress = createProgressRenderer(deps.out);
      const s = await withDaemon(deps, (c) =>
        c.call(
          "vm.snapshot",
          { name: vm, ...(opts.name ? { snapshot: opts.name } : {}), stop: opts.stop ?? false },
          { onProgress: progress.report },
        ),
      ).finally(() => progress.done());
      deps.out.stdout.write(`${s.name}\n`);
      deps.out.stderr.write(
        `snapshot ${s.name} of ${vm}: ${formatSizeBytes(s.bytes)}, the VM was paused ${s.pausedMs} ms; ` +
          `'banger vm create --from-snapshot ${s.name}' clones it\n`,
      );
    });

  const fork = new Command("fork")
    .description("Snapshot a running VM and start a clone of it")
    .argument("<vm>")
    .option("--name <name>", "the clone's name (default: <vm>-fork-<n>)")
    .option("--nat", "give the clone outbound network access through NAT")
    .addHelpText(
      "after",
      `
Examples:
  $ banger vm fork dev --name dev2 && banger vm ssh dev2
`,
    )
    .action(async (vm, opts) => {
      const progress = createProgressRenderer(deps.out);
      const info = await withDaemon(deps, (c) =>
        c.call(
          "vm.fork",
          { name: vm, ...(opts.name ? { clone: opts.name } : {}), nat: opts.nat ?? false },
          { onProgress: progress.report },
        ),
      ).finally(() => progress.done());
      for (const w of info.warnings) deps.out.stderr.write(`warning: ${w}\n`);
      deps.out.stdout.write(`${info.name}\n`);
      deps.out.stderr.write(
        `VM ${info.name} is a clone of ${vm} (snapshot ${info.snapshot}): 'banger vm ssh ${info.name}' for a shell\n`,
      );
    });
  return [snapshot, fork] as unknown as Command[];
}
