import path from "node:path";
import { Command } from "@commander-js/extra-typings";
import { makeKernelBundle } from "../kernel/bundle.js";
import { formatSizeBytes } from "../util/size.js";
import type { CliDeps } from "./context.js";
import { formatFields, printJson } from "./output.js";

/** Maintainer tools (hidden from the main help): building catalog bundles. */
export function internalCommand(deps: CliDeps): Command {
  const internal = new Command("internal").description("Maintainer tools: build catalog bundles");
  internal
    .command("make-kernel-bundle")
    .description(
      "Pack a local kernel dir as <name>-<sha256 prefix>-<arch>.tar.zst and print its catalog facts",
    )
    .argument("<dir>", "kernel directory (vmlinux/vmlinuz, initrd.img, modules/)")
    .requiredOption("--out <dir>", "where to write the bundle")
    .option("--name <name>", "kernel name (default: the directory's name)")
    .option("--arch <arch>", "architecture", "x86_64")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  $ banger internal make-kernel-bundle ~/.local/state/banger/kernels/debian-cloud --out ./bundles\n",
    )
    .action(async (dir, opts) => {
      const bundle = await makeKernelBundle(path.resolve(dir), path.resolve(opts.out), {
        arch: opts.arch,
        ...(opts.name ? { name: opts.name } : {}),
      });
      if (opts.json) return printJson(deps.out, bundle);
      deps.out.stdout.write(
        formatFields([
          ["path", bundle.path],
          ["sha256", bundle.sha256],
          ["size", `${bundle.sizeBytes} (${formatSizeBytes(bundle.sizeBytes)})`],
        ]),
      );
    });
  return internal as unknown as Command;
}
