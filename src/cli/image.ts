import { Command } from "@commander-js/extra-typings";
import type { ImageInfo } from "../api/methods.js";
import { formatSizeBytes } from "../util/size.js";
import { describeGroup, pending, withDaemon, type CliDeps } from "./context.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";

const IMAGE_ISSUE = "the image work (issue #4)";

export function imageCommand(deps: CliDeps): Command {
  const image = describeGroup(new Command("image"), {
    purpose:
      "Root filesystems VMs boot from. The default Debian image is built for you on first use; pull any OCI image with 'banger image pull'.",
    examples: [
      "banger image pull debian:bookworm          # from Docker Hub, into a bootable ext4",
      "banger image build                         # (re)build the default debian-bookworm image",
      "banger image list",
    ],
    next: "'banger vm run --image <name>' boots it.",
  });

  image
    .command("build")
    .description("Build the default Debian image locally with mmdebstrap")
    .argument("[name]", "image name", "debian-bookworm")
    .option("--suite <suite>", "Debian suite", "bookworm")
    .option("--packages <list>", "extra packages, comma-separated")
    .option("--size <size>", "ext4 size, e.g. 4G")
    .action(pending("banger image build", IMAGE_ISSUE));
  image
    .command("pull")
    .description("Pull a catalog image or any OCI image into a bootable ext4")
    .argument("<ref>", "catalog name or OCI reference, e.g. debian:bookworm")
    .option("--name <name>", "local name (default: derived from the reference)")
    .option("--kernel-ref <name>", "kernel to boot it with")
    .option("--size <size>", "ext4 size (default: 1.5x the content, at least 1G)")
    .option("--insecure-registry", "allow plain HTTP to this registry")
    .action(pending("banger image pull", IMAGE_ISSUE));
  image
    .command("register")
    .description("Register an existing rootfs.ext4 without copying it")
    .requiredOption("--rootfs <file>", "ext4 root filesystem")
    .option("--name <name>", "image name")
    .option("--kernel-ref <name>", "a kernel banger already has")
    .option("--kernel <file>", "a kernel file (instead of --kernel-ref)")
    .option("--initrd <file>", "initramfs to go with --kernel")
    .option("--modules <dir>", "modules directory to go with --kernel")
    .action(pending("banger image register", IMAGE_ISSUE));

  image
    .command("list")
    .alias("ls")
    .description("List local images")
    .option("--json", "print JSON")
    .action(async (opts) => {
      const images = await withDaemon(deps, (c) => c.call("image.list", {}));
      if (opts.json) return printJson(deps.out, images);
      if (images.length === 0) {
        deps.out.stdout.write("no images yet: 'banger image build' or 'banger image pull <ref>'\n");
        return;
      }
      deps.out.stdout.write(
        formatTable(
          ["NAME", "KERNEL", "SIZE", "SOURCE", "CREATED"],
          images.map((i) => [
            i.name,
            orDash(i.kernel),
            i.sizeBytes === null ? "-" : formatSizeBytes(i.sizeBytes),
            orDash(i.source),
            i.createdAt,
          ]),
        ),
      );
    });
  image
    .command("show")
    .description("Show one image")
    .argument("<name>")
    .option("--json", "print JSON")
    .action(async (name, opts) => {
      const info = await withDaemon(deps, (c) => c.call("image.show", { name }));
      if (opts.json) return printJson(deps.out, info);
      deps.out.stdout.write(formatImage(info));
    });
  image
    .command("delete")
    .alias("rm")
    .description("Delete an image no VM uses")
    .argument("<name>")
    .action(pending("banger image delete", IMAGE_ISSUE));
  image
    .command("promote")
    .description("Copy a registered (unmanaged) image into banger's store")
    .argument("<name>")
    .action(pending("banger image promote", IMAGE_ISSUE));

  const cache = describeGroup(new Command("cache"), {
    purpose: "The OCI layer cache: layers kept so a second pull downloads nothing. Safe to prune.",
    examples: ["banger image cache prune --dry-run", "banger image cache prune"],
    next: "the next pull downloads its layers again.",
  });
  image.addCommand(cache);
  cache
    .command("prune")
    .description("Empty the layer cache")
    .option("--dry-run", "only say what would be freed")
    .action(pending("banger image cache prune", IMAGE_ISSUE));

  return image as unknown as Command;
}

function formatImage(i: ImageInfo): string {
  return formatFields([
    ["name", i.name],
    ["id", i.id],
    ["kernel", orDash(i.kernel)],
    ["rootfs", i.rootfsPath],
    ["size", i.sizeBytes === null ? "-" : formatSizeBytes(i.sizeBytes)],
    ["source", orDash(i.source)],
    ["digest", orDash(i.digest)],
    ["managed", i.managed ? "yes" : "no (registered)"],
    ["created", i.createdAt],
  ]);
}
