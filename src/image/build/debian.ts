import { BangerError, ErrorCode } from "../../api/errors.js";
import type { CommandRunner } from "../../system/runner.js";

/**
 * What the default image holds beyond minbase: SSH and systemd, then a dev box, so that
 * `vm run ./repo -- make test` finds what a coding agent reaches for. Installed without
 * Recommends (mmdebstrap's default); `--packages` adds more.
 */
export const DEFAULT_PACKAGES = [
  // The system: init, devices, SSH in, network, certificates.
  "systemd-sysv",
  "udev",
  "openssh-server",
  "iproute2",
  "ca-certificates",
  "sudo",
  "procps",
  // Building: gcc, g++, make, libc headers (build-essential), and python3 with venv and pip.
  "build-essential",
  "python3",
  "python3-venv",
  "python3-pip",
  // Everyday tools: sources, downloads, archives, text and files.
  "git",
  "openssh-client",
  "curl",
  "wget",
  "jq",
  "ripgrep",
  "file",
  "tree",
  "patch",
  "rsync",
  "unzip",
  "zip",
  "xz-utils",
  "bzip2",
  "less",
  "vim-tiny",
  "tmux",
];

export interface DebianBuildOptions {
  suite: string;
  extraPackages: string[];
  /** Where mmdebstrap writes the root filesystem tarball. */
  outputTar: string;
  runner: CommandRunner;
  /** Root runs mmdebstrap in root mode; anyone else in unshare mode (user namespaces). */
  isRoot: boolean;
  mirror?: string | undefined;
  progress?: (message: string) => void;
  signal?: AbortSignal;
}

const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;

/** Runs mmdebstrap to produce a root filesystem tarball; the same finalisation as a pulled image follows. */
export async function bootstrapDebian(opts: DebianBuildOptions): Promise<void> {
  for (const pkg of opts.extraPackages) {
    if (!PACKAGE_NAME.test(pkg)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `invalid package name "${pkg}"`,
        "give Debian package names separated by commas, e.g. --packages make,gcc",
      );
    }
  }
  if (!/^[a-z][a-z0-9-]*$/.test(opts.suite))
    throw new BangerError(
      ErrorCode.InvalidParams,
      `invalid suite "${opts.suite}"`,
      "e.g. bookworm or trixie",
    );
  const packages = [...new Set([...DEFAULT_PACKAGES, ...opts.extraPackages])];
  const args = [
    "--variant=minbase",
    `--mode=${opts.isRoot ? "root" : "unshare"}`,
    `--include=${packages.join(",")}`,
    // The guest has no use for docs and man pages; they are a third of minbase.
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    opts.suite,
    opts.outputTar,
    ...(opts.mirror ? [opts.mirror] : []),
  ];
  const result = await opts.runner.run("mmdebstrap", args, {
    timeoutMs: 30 * 60_000,
    maxOutputBytes: 64 * 1024 * 1024,
    onStderrLine: (line) => {
      const m = /^I: (.*)/.exec(line);
      if (m) opts.progress?.(m[1]!);
    },
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  if (result.code !== 0) {
    const tail = result.stderr.trim().split("\n").slice(-8).join("\n");
    throw new BangerError(
      ErrorCode.Precondition,
      `mmdebstrap failed (status ${result.code ?? result.signal}):\n${tail}`,
      "check that Debian's package repositories are reachable; 'banger doctor' checks the tools",
    );
  }
}
