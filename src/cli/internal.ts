import net from "node:net";
import path from "node:path";
import { Command } from "@commander-js/extra-typings";
import type { PackedBundle } from "../util/bundle-pack.js";
import { parseSize } from "../util/size.js";
import { formatSizeBytes } from "../util/size.js";
import { withDaemon, type CliDeps } from "./context.js";
import { formatFields, printJson } from "./output.js";

/**
 * Maintainer tools (hidden from the main help): building catalog bundles, and the ProxyCommand
 * `banger ssh-config` writes. The bundle makers (tar, zstd, sqlite, zod) load only when run:
 * the proxy starts on every `ssh <name>.vm`.
 */
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
      const { makeKernelBundle } = await import("../kernel/bundle.js");
      const bundle = await makeKernelBundle(path.resolve(dir), path.resolve(opts.out), {
        arch: opts.arch,
        ...(opts.name ? { name: opts.name } : {}),
      });
      printBundle(deps, bundle, opts.json ?? false);
    });
  internal
    .command("make-bundle")
    .description(
      "Turn a docker-export style rootfs tar into an image bundle and print its catalog facts",
    )
    .requiredOption("--rootfs-tar <file|->", "root filesystem tar ('-' reads standard input)")
    .requiredOption("--name <name>", "image name")
    .requiredOption("--distro <distro>", "distribution, e.g. debian")
    .option("--arch <arch>", "architecture", "x86_64")
    .requiredOption("--kernel-ref <name>", "kernel the image boots with, e.g. debian-cloud")
    .option("--size <size>", "ext4 size (default: 1.5x the content, at least 1G)")
    .requiredOption("--out <dir>", "where to write the bundle")
    .option("--json", "print JSON")
    .addHelpText(
      "after",
      "\nExamples:\n  $ docker export $(docker create debian:bookworm) | banger internal make-bundle --rootfs-tar - --name debian-bookworm --distro debian --kernel-ref debian-cloud --out ./bundles\n",
    )
    .action(async (opts) => {
      const { makeImageBundle } = await import("../image/bundle.js");
      const { createCommandRunner } = await import("../system/runner.js");
      const bundle = await makeImageBundle({
        rootfsTar: opts.rootfsTar === "-" ? process.stdin : opts.rootfsTar,
        name: opts.name,
        distro: opts.distro,
        arch: opts.arch,
        kernelRef: opts.kernelRef,
        sizeBytes: opts.size ? parseSize(opts.size) : undefined,
        outDir: path.resolve(opts.out),
        runner: createCommandRunner(deps.env),
      });
      printBundle(deps, bundle, opts.json ?? false);
    });
  internal
    .command("ssh-proxy")
    .description(
      "Connect stdin/stdout to a VM's SSH port (the ProxyCommand of 'banger ssh-config')",
    )
    .argument("<host>", "<name>.vm")
    .action(async (host: string) => {
      const name = host.replace(/\.vm$/, "");
      const target = await withDaemon(deps, (c) => c.call("vm.ssh", { name }));
      const socket = net.createConnection({ host: target.host, port: target.port });
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", () => {
          process.stdin.pipe(socket);
          socket.pipe(process.stdout);
        });
        socket.once("error", reject);
        socket.once("close", () => resolve());
      });
    });
  return internal as unknown as Command;
}

/** What a catalog entry needs: path, sha256 and size. */
function printBundle(deps: CliDeps, bundle: PackedBundle, json: boolean): void {
  if (json) return printJson(deps.out, bundle);
  deps.out.stdout.write(
    formatFields([
      ["path", bundle.path],
      ["sha256", bundle.sha256],
      ["size", `${bundle.sizeBytes} (${formatSizeBytes(bundle.sizeBytes)})`],
    ]),
  );
}
