import { Command } from "@commander-js/extra-typings";
import path from "node:path";
import type { KernelDetail } from "../api/methods.js";
import { DISTRO_KERNEL_NAME } from "../config/defaults.js";
import { formatSizeBytes } from "../util/size.js";
import { describeGroup, withDaemon, type CliDeps } from "./context.js";
import { createProgressRenderer } from "./progress.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";

export function kernelCommand(deps: CliDeps): Command {
  const kernel = describeGroup(new Command("kernel"), {
    purpose: `Guest kernels, by name. The default '${DISTRO_KERNEL_NAME}' kernel is derived from your distribution's cloud kernel on first use.`,
    examples: [
      `banger kernel pull ${DISTRO_KERNEL_NAME}`,
      "banger kernel list --available",
      `banger kernel show ${DISTRO_KERNEL_NAME}`,
    ],
    next: "'banger image pull <ref> --kernel-ref <name>' pairs an image with a kernel.",
  });

  kernel
    .command("list")
    .alias("ls")
    .description("List local kernels (with --available: the catalog)")
    .option("--available", "list catalog kernels and whether each is pulled")
    .option("--json", "print JSON")
    .action(async (opts) => {
      if (opts.available) {
        const entries = await withDaemon(deps, (c) => c.call("kernel.catalog", {}));
        if (opts.json) return printJson(deps.out, entries);
        deps.out.stdout.write(
          formatTable(
            ["NAME", "STATE", "SIZE", "DESCRIPTION"],
            entries.map((e) => [
              e.name,
              e.state,
              e.sizeBytes === null ? "-" : formatSizeBytes(e.sizeBytes),
              e.description,
            ]),
          ),
        );
        return;
      }
      const kernels = await withDaemon(deps, (c) => c.call("kernel.list", {}));
      if (opts.json) return printJson(deps.out, kernels);
      if (kernels.length === 0) {
        deps.out.stdout.write(`no kernels yet: 'banger kernel pull ${DISTRO_KERNEL_NAME}'\n`);
        return;
      }
      deps.out.stdout.write(
        formatTable(
          ["NAME", "VERSION", "SOURCE", "CREATED"],
          kernels.map((k) => [k.name, orDash(k.version), orDash(k.source), k.createdAt]),
        ),
      );
    });
  kernel
    .command("pull")
    .description(`Fetch a catalog kernel, or derive ${DISTRO_KERNEL_NAME} from apt`)
    .argument("<name>")
    .option("--force", "replace a kernel that is already present")
    .action(async (name, opts) => {
      const progress = createProgressRenderer(deps.out);
      const info = await withDaemon(deps, (c) =>
        c.call(
          "kernel.pull",
          { name, force: opts.force ?? false },
          { onProgress: progress.report },
        ),
      ).finally(() => progress.done());
      deps.out.stdout.write(
        `pulled kernel ${info.name}${info.version ? ` (${info.version})` : ""} into ${info.dir}\n`,
      );
    });
  kernel
    .command("import")
    .description("Copy a kernel directory (vmlinux/vmlinuz, initrd, modules/) into banger's store")
    .argument("<name>")
    .requiredOption("--from <dir>", "directory holding the kernel")
    .action(async (name, opts) => {
      const info = await withDaemon(deps, (c) =>
        c.call("kernel.import", { name, from: path.resolve(opts.from) }),
      );
      deps.out.stdout.write(
        `imported kernel ${info.name}${info.version ? ` (${info.version})` : ""} into ${info.dir}\n`,
      );
    });
  kernel
    .command("show")
    .description("Show one kernel")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (name, opts) => {
      const info = await withDaemon(deps, (c) => c.call("kernel.show", { name }));
      if (opts.json) return printJson(deps.out, info);
      deps.out.stdout.write(formatKernel(info));
    });
  kernel
    .command("delete")
    .aliases(["rm", "remove"])
    .description("Delete a kernel no image references")
    .argument("<name>")
    .option("--force", "delete even if an image references it")
    .action(async (name, opts) => {
      await withDaemon(deps, (c) => c.call("kernel.delete", { name, force: opts.force ?? false }));
      deps.out.stdout.write(`deleted kernel ${name}\n`);
    });

  return kernel as unknown as Command;
}

function formatKernel(k: KernelDetail): string {
  return formatFields([
    ["name", k.name],
    ["version", orDash(k.version)],
    ["source", orDash(k.source)],
    ["sha256", orDash(k.sha256)],
    ["cmdline", orDash(k.cmdline)],
    ["dir", k.dir],
    ["vmlinux", orDash(k.files.vmlinux)],
    ["vmlinuz", orDash(k.files.vmlinuz)],
    ["initrd", orDash(k.files.initrd)],
    ["modules", orDash(k.files.modules)],
    ["created", k.createdAt],
  ]);
}
