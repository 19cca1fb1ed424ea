import { Command } from "@commander-js/extra-typings";
import type { KernelInfo } from "../api/methods.js";
import { describeGroup, pending, withDaemon, type CliDeps } from "./context.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";

const KERNEL_ISSUE = "the kernel work (issue #3)";

export function kernelCommand(deps: CliDeps): Command {
  const kernel = describeGroup(new Command("kernel"), {
    purpose:
      "Guest kernels, by name. The default 'debian-cloud' kernel is derived from your distribution's cloud kernel on first use.",
    examples: [
      "banger kernel pull debian-cloud",
      "banger kernel list --available",
      "banger kernel show debian-cloud",
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
      if (opts.available) return pending("banger kernel list --available", KERNEL_ISSUE)();
      const kernels = await withDaemon(deps, (c) => c.call("kernel.list", {}));
      if (opts.json) return printJson(deps.out, kernels);
      if (kernels.length === 0) {
        deps.out.stdout.write("no kernels yet: 'banger kernel pull debian-cloud'\n");
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
    .description("Fetch a catalog kernel, or derive debian-cloud from apt")
    .argument("<name>")
    .option("--force", "replace a kernel that is already present")
    .action(pending("banger kernel pull", KERNEL_ISSUE));
  kernel
    .command("import")
    .description("Copy a kernel directory (vmlinux/vmlinuz, initrd, modules/) into banger's store")
    .argument("<name>")
    .requiredOption("--from <dir>", "directory holding the kernel")
    .action(pending("banger kernel import", KERNEL_ISSUE));
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
    .action(pending("banger kernel delete", KERNEL_ISSUE));

  return kernel as unknown as Command;
}

function formatKernel(k: KernelInfo): string {
  return formatFields([
    ["name", k.name],
    ["version", orDash(k.version)],
    ["source", orDash(k.source)],
    ["dir", k.dir],
    ["sha256", orDash(k.sha256)],
    ["created", k.createdAt],
  ]);
}
