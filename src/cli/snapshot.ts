import { Command } from "@commander-js/extra-typings";
import type { SnapshotInfo } from "../api/methods.js";
import { formatSizeBytes } from "../util/size.js";
import { describeGroup, withDaemon, type CliDeps } from "./context.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";

export function snapshotCommand(deps: CliDeps): Command {
  const snapshot = describeGroup(new Command("snapshot"), {
    purpose:
      "Saved VM states: memory, devices and both disks of a running VM at one paused instant. Clones restore one in seconds instead of booting. 'banger vm snapshot <vm>' takes one, 'banger vm fork <vm>' snapshots and clones in one go.",
    examples: [
      "banger vm snapshot dev --name base          # save the running VM 'dev'",
      "banger vm create --from-snapshot base --name try1",
      "banger vm fork dev                          # snapshot dev and start a clone of it",
      "banger snapshot list",
    ],
    next: "'banger vm create --from-snapshot <name>' to clone one; 'banger snapshot delete <name>' frees its space once no VM is cloned from it; 'banger snapshot prune' drops warm start's boot snapshots.",
  });

  snapshot
    .command("list")
    .alias("ls")
    .description("List snapshots with their sizes and clones")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const all = await withDaemon(deps, (c) => c.call("snapshot.list", {}));
      if (opts.json) return printJson(deps.out, all);
      if (all.length === 0) {
        deps.out.stdout.write("no snapshots yet: 'banger vm snapshot <vm>' takes one\n");
        return;
      }
      deps.out.stdout.write(
        formatTable(
          ["NAME", "KIND", "FROM", "IMAGE", "MEMORY", "SIZE", "CLONES", "CREATED"],
          all.map((s) => [
            s.name,
            s.kind,
            orDash(s.sourceVm),
            orDash(s.image),
            formatSizeBytes(s.memoryBytes),
            formatSizeBytes(s.bytes),
            String(s.clones.length),
            s.createdAt,
          ]),
        ),
      );
    });

  snapshot
    .command("show")
    .description("Show one snapshot: what it was taken from, what a restore needs, its clones")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (name, opts) => {
      const info = await withDaemon(deps, (c) => c.call("snapshot.show", { name }));
      if (opts.json) return printJson(deps.out, info);
      deps.out.stdout.write(formatSnapshot(info));
    });

  snapshot
    .command("delete")
    .alias("rm")
    .description("Remove a snapshot and its files (refused while VMs are cloned from it)")
    .argument("<name>")
    .action(async (name) => {
      const r = await withDaemon(deps, (c) => c.call("snapshot.delete", { name }));
      deps.out.stdout.write(`deleted ${r.deleted} (${formatSizeBytes(r.freedBytes)} freed)\n`);
    });

  snapshot
    .command("prune")
    .description(
      "Remove warm start's boot snapshots no VM is cloned from (your own snapshots stay)",
    )
    .option("--dry-run", "only say what would be freed")
    .action(async (opts) => {
      const r = await withDaemon(deps, (c) =>
        c.call("snapshot.prune", { dryRun: opts.dryRun ?? false }),
      );
      deps.out.stdout.write(
        `${r.dryRun ? "would free" : "freed"} ${formatSizeBytes(r.freedBytes)}: ${r.deleted.length === 0 ? "no boot snapshot to remove" : r.deleted.join(", ")}\n`,
      );
    });

  return snapshot as unknown as Command;
}

export function formatSnapshot(s: SnapshotInfo): string {
  return formatFields([
    ["name", s.name],
    ["id", s.id],
    ["kind", s.kind],
    ["from vm", orDash(s.sourceVm)],
    ["image", orDash(s.image)],
    ["kernel", s.kernel],
    ["vmm", `${s.vmm} (${s.vmmVersion})`],
    ["accel", s.accel],
    ["vcpu", String(s.vcpu)],
    ["memory", formatSizeBytes(s.memoryBytes)],
    ["disk", formatSizeBytes(s.diskBytes)],
    ["size", formatSizeBytes(s.bytes)],
    ["clones", s.clones.length > 0 ? s.clones.join(", ") : "-"],
    ["created", s.createdAt],
  ]);
}
