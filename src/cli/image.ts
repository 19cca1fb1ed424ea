import { Command } from "@commander-js/extra-typings";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { ImageInfo } from "../api/methods.js";
import { DEFAULT_IMAGE_NAME, DISTRO_KERNEL_NAME } from "../config/defaults.js";
import path from "node:path";
import { formatSizeBytes, parseSize } from "../util/size.js";
import { describeGroup, withDaemon, type CliDeps } from "./context.js";
import { createProgressRenderer } from "./progress.js";
import { formatFields, formatTable, orDash, printJson } from "./output.js";
import { visible } from "../util/terminal-text.js";

/** Runs a long image call with progress on a TTY, then prints what was made. */
async function makeImage(
  deps: CliDeps,
  call: (
    c: import("./client.js").DaemonClient,
    onProgress: (r: import("../api/methods.js").ProgressReport) => void,
  ) => Promise<ImageInfo>,
): Promise<void> {
  const progress = createProgressRenderer(deps.out);
  const info = await withDaemon(deps, (c) => call(c, progress.report)).finally(() =>
    progress.done(),
  );
  // What the image's config held that banger will not apply (the registry's words, escaped).
  for (const w of info.config?.warnings ?? []) deps.out.stderr.write(`warning: ${visible(w)}\n`);
  const size = info.sizeBytes === null ? "" : `, ${formatSizeBytes(info.sizeBytes)}`;
  deps.out.stdout.write(
    `image ${info.name} ready (${info.rootfsPath}${size}); boot it with 'banger vm run --image ${info.name}'\n`,
  );
}

export function imageCommand(deps: CliDeps): Command {
  const image = describeGroup(new Command("image"), {
    purpose:
      "Root filesystems VMs boot from. The default Debian image is built for you on first use; pull any OCI image with 'banger image pull', import one saved by Docker, Podman or skopeo with 'banger image import', or build a Dockerfile with 'banger image build -f'.",
    examples: [
      "banger image pull debian:bookworm          # from Docker Hub, into a bootable ext4",
      `banger image build                         # (re)build the default ${DEFAULT_IMAGE_NAME} image`,
      "banger image build -f Dockerfile . --name myapp   # a Dockerfile, with Buildah",
      "podman save -o app.tar app && banger image import app.tar",
      "banger image list",
    ],
    next: "'banger vm run --image <name>' boots it.",
  });

  image
    .command("build")
    .description(
      "Build the default Debian image with mmdebstrap, or with -f a Dockerfile with Buildah",
    )
    .argument(
      "[name|context]",
      `without -f: the image name (default ${DEFAULT_IMAGE_NAME}); with -f: the build context directory (default: the Dockerfile's)`,
    )
    .option("-f, --file <Dockerfile>", "build this Dockerfile with Buildah (needs --name)")
    .option("--name <name>", "image name")
    .option("--build-arg <NAME=VALUE>", "with -f: a build argument (repeatable)", collect)
    .option("--insecure-registry", "with -f: allow plain HTTP to the registries FROM names")
    .option(
      "--kernel-ref <name>",
      `with -f: kernel to boot it with (default: ${DISTRO_KERNEL_NAME})`,
    )
    .option("--suite <suite>", "without -f: Debian suite (default: bookworm)")
    .option("--packages <list>", "without -f: extra packages, comma-separated")
    .option("--size <size>", "ext4 size, e.g. 4G")
    .addHelpText(
      "after",
      [
        "",
        "With -f, Buildah runs the Dockerfile's RUN steps on this host, as the daemon's user,",
        "under chroot isolation: that is not a sandbox. Build only Dockerfiles (and FROM images)",
        "you would run on this machine yourself; the VM that boots the result is the boundary.",
        "",
        "Examples:",
        "  $ banger image build                                   # the default Debian image",
        "  $ banger image build -f Dockerfile . --name myapp      # then: banger vm run --image myapp",
        "  $ banger image build -f ci/Dockerfile --name ci --build-arg VERSION=1.2",
        "",
      ].join("\n"),
    )
    .action(async (positional, opts) => {
      const size = opts.size ? { sizeBytes: parseSize(opts.size) } : {};
      if (opts.file) {
        refuseFlags(
          { "--suite": opts.suite, "--packages": opts.packages },
          "is for the Debian image, not a Dockerfile build",
          "put the packages in the Dockerfile (RUN apt-get install ...)",
        );
        if (!opts.name)
          throw new BangerError(
            ErrorCode.InvalidParams,
            "a Dockerfile build needs --name",
            `e.g. 'banger image build -f ${opts.file} --name myapp'`,
          );
        const file = path.resolve(opts.file);
        const params = {
          name: opts.name,
          file,
          context: positional ? path.resolve(positional) : path.dirname(file),
          ...(opts.buildArg ? { buildArgs: opts.buildArg } : {}),
          ...(opts.insecureRegistry ? { insecureRegistry: true } : {}),
          ...(opts.kernelRef ? { kernelRef: opts.kernelRef } : {}),
          ...size,
        };
        await makeImage(deps, (c, onProgress) =>
          c.call("image.build.dockerfile", params, { onProgress }),
        );
        return;
      }
      refuseFlags(
        {
          "--build-arg": opts.buildArg,
          "--insecure-registry": opts.insecureRegistry,
          "--kernel-ref": opts.kernelRef,
        },
        "is for a Dockerfile build (-f)",
        "give -f <Dockerfile>, or leave the flag out",
      );
      if (positional && opts.name && positional !== opts.name)
        throw new BangerError(
          ErrorCode.InvalidParams,
          `two names given: ${JSON.stringify(positional)} and --name ${JSON.stringify(opts.name)}`,
          "give the name once",
        );
      await makeImage(deps, (c, onProgress) =>
        c.call(
          "image.build",
          {
            name: opts.name ?? positional ?? DEFAULT_IMAGE_NAME,
            ...(opts.suite ? { suite: opts.suite } : {}),
            ...(opts.packages
              ? {
                  packages: opts.packages
                    .split(",")
                    .map((p) => p.trim())
                    .filter(Boolean),
                }
              : {}),
            ...size,
          },
          { onProgress },
        ),
      );
    });
  image
    .command("pull")
    .description("Pull a catalog image or any OCI image into a bootable ext4")
    .argument("<ref>", "catalog name or OCI reference, e.g. debian:bookworm")
    .option("--name <name>", "local name (default: derived from the reference)")
    .option("--kernel-ref <name>", `kernel to boot it with (default: ${DISTRO_KERNEL_NAME})`)
    .option("--size <size>", "ext4 size (default: 1.5x the content, at least 1G)")
    .option("--insecure-registry", "allow plain HTTP to this registry")
    .action(async (ref, opts) => {
      await makeImage(deps, (c, onProgress) =>
        c.call(
          "image.pull",
          {
            ref,
            ...(opts.name ? { name: opts.name } : {}),
            ...(opts.kernelRef ? { kernelRef: opts.kernelRef } : {}),
            ...(opts.size ? { sizeBytes: parseSize(opts.size) } : {}),
            ...(opts.insecureRegistry ? { insecureRegistry: true } : {}),
          },
          { onProgress },
        ),
      );
    });
  image
    .command("import")
    .description(
      "Import what 'docker save', 'podman save' or 'skopeo copy' wrote: a docker-archive, an oci-archive or an OCI layout directory",
    )
    .argument("<source>", "archive file, OCI layout directory, or - to read an archive from stdin")
    .option("--name <name>", "image name (default: the file's name; needed with -)")
    .option("--kernel-ref <name>", `kernel to boot it with (default: ${DISTRO_KERNEL_NAME})`)
    .option("--size <size>", "ext4 size (default: 1.5x the content, at least 1G)")
    .action(async (source, opts) => {
      const params = {
        ...(opts.name ? { name: opts.name } : {}),
        ...(opts.kernelRef ? { kernelRef: opts.kernelRef } : {}),
        ...(opts.size ? { sizeBytes: parseSize(opts.size) } : {}),
      };
      if (source !== "-") {
        await makeImage(deps, (c, onProgress) =>
          c.call("image.import", { path: path.resolve(source), ...params }, { onProgress }),
        );
        return;
      }
      if (!opts.name)
        throw new BangerError(
          ErrorCode.InvalidParams,
          "an archive from stdin needs a --name",
          "e.g. 'podman save app | banger image import - --name app'",
        );
      const { withStdinSpool } = await import("./stdin-spool.js");
      await withStdinSpool(deps.layout.importsDir, process.stdin, (file) =>
        makeImage(deps, (c, onProgress) =>
          c.call("image.import", { path: file, stdin: true, ...params }, { onProgress }),
        ),
      );
    });
  image
    .command("register")
    .description("Register an existing rootfs.ext4 without copying it")
    .requiredOption("--rootfs <file>", "ext4 root filesystem")
    .option("--name <name>", "image name (default: the file's name without .ext4)")
    .option("--kernel-ref <name>", "a kernel banger already has")
    .option("--kernel <file>", "a kernel file (instead of --kernel-ref)")
    .option("--initrd <file>", "initramfs to go with --kernel")
    .option("--modules <dir>", "modules directory to go with --kernel")
    .action(async (opts) => {
      if (opts.kernelRef && (opts.kernel || opts.initrd || opts.modules)) {
        throw new BangerError(
          ErrorCode.InvalidParams,
          "--kernel-ref and --kernel/--initrd/--modules are mutually exclusive",
          "name a kernel banger has, or give the kernel files, not both",
        );
      }
      const abs = (f: string | undefined) => (f ? path.resolve(f) : undefined);
      const info = await withDaemon(deps, (c) =>
        c.call("image.register", {
          name:
            opts.name ??
            path
              .basename(opts.rootfs)
              .replace(/\.(ext4|img|raw)$/i, "")
              .toLowerCase(),
          rootfs: path.resolve(opts.rootfs),
          ...(opts.kernelRef ? { kernelRef: opts.kernelRef } : {}),
          ...(opts.kernel ? { kernel: abs(opts.kernel) } : {}),
          ...(opts.initrd ? { initrd: abs(opts.initrd) } : {}),
          ...(opts.modules ? { modules: abs(opts.modules) } : {}),
        }),
      );
      deps.out.stdout.write(
        `registered image ${info.name} (${info.rootfsPath}, kernel ${info.kernel}); banger will not copy or delete that file\n`,
      );
    });

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
    .action(async (name) => {
      await withDaemon(deps, (c) => c.call("image.delete", { name }));
      deps.out.stdout.write(`deleted image ${name}\n`);
    });
  image
    .command("promote")
    .description("Copy a registered (unmanaged) image into banger's store")
    .argument("<name>")
    .action(async (name) => {
      const info = await withDaemon(deps, (c) => c.call("image.promote", { name }));
      deps.out.stdout.write(`image ${info.name} is now managed by banger at ${info.rootfsPath}\n`);
    });

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
    .action(async (opts) => {
      const r = await withDaemon(deps, (c) =>
        c.call("image.cache.prune", { dryRun: opts.dryRun ?? false }),
      );
      deps.out.stdout.write(
        `${r.dryRun ? "would free" : "freed"} ${formatSizeBytes(r.freedBytes)} across ${r.blobs} blob(s) in ${r.dir}\n`,
      );
    });

  return image as unknown as Command;
}

/** The OCI config's fields as `show` rows; lists as JSON, so every word boundary is visible. */
function configFields(c: ImageInfo["config"]): Array<[string, string]> {
  if (c === null)
    return [["config", "- (none: built by banger, registered, or pulled before banger kept it)"]];
  const list = (v: string[] | null) => (v === null ? "-" : JSON.stringify(v));
  return [
    ["entrypoint", list(c.entrypoint)],
    ["cmd", list(c.cmd)],
    ...(c.env.length === 0
      ? [["env", "-"] as [string, string]]
      : c.env.map((e): [string, string] => ["env", e])),
    ["workdir", orDash(c.workingDir)],
    ["ports", c.exposedPorts.length === 0 ? "-" : c.exposedPorts.join(" ")],
    ["user", orDash(c.user)],
    ...c.warnings.map((w): [string, string] => ["dropped", w]),
  ];
}

/** The first of these flags that was given is an error: it belongs to the other kind of build. */
function refuseFlags(flags: Record<string, unknown>, why: string, hint: string): void {
  for (const [flag, given] of Object.entries(flags))
    if (given) throw new BangerError(ErrorCode.InvalidParams, `${flag} ${why}`, hint);
}

/** Commander's accumulator for a repeatable option (undefined until it is first given). */
function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
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
    ["init", i.init ?? "/sbin/init"],
    ["created", i.createdAt],
    ...configFields(i.config),
  ]);
}
