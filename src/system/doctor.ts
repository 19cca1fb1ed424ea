import pc from "picocolors";
import type { NetworkStatus } from "../api/methods.js";
import type { PrivilegedProbe } from "./privileged-probe.js";
import { detectAccel, type AccelDeps } from "./accel.js";
import type { CommandRunner } from "./runner.js";

export type CheckStatus = "ok" | "warn" | "fail";

export interface CheckResult {
  status: CheckStatus;
  detail: string;
  fix?: string;
}

export interface DoctorCheck {
  name: string;
  run(): Promise<CheckResult>;
}

export interface DoctorReport {
  ok: boolean;
  checks: Array<{ name: string } & CheckResult>;
}

/** Runs every check, each bounded in time; a check that throws is a failure, never a crash. */
export async function runChecks(checks: DoctorCheck[], timeoutMs = 15_000): Promise<DoctorReport> {
  const results = await Promise.all(
    checks.map(async (check) => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<CheckResult>((resolve) => {
        timer = setTimeout(
          () => resolve({ status: "fail", detail: `did not finish within ${timeoutMs / 1000}s` }),
          timeoutMs,
        );
      });
      try {
        const result = await Promise.race([check.run(), timeout]);
        return { name: check.name, ...result };
      } catch (err) {
        return {
          name: check.name,
          status: "fail" as const,
          detail: err instanceof Error ? err.message : String(err),
        };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return { ok: results.every((r) => r.status !== "fail"), checks: results };
}

export interface DoctorDeps {
  runner: CommandRunner;
  accel: AccelDeps;
  canOpenRw(path: string): Promise<boolean>;
  nodeVersion: string;
  /** One line: each VM default with its provenance. */
  describeVmDefaults(): Promise<string>;
  configFile: string;
  configExists(): Promise<boolean>;
  /** Who would run bridge networking's privileged steps: root in-process, banger-helper, or nobody. */
  probePrivileged(): Promise<PrivilegedProbe>;
  /** For the fix line: the user the helper should serve. */
  userName: string;
  /**
   * The guest toolkit banger copies into every image (busybox-static, dropbear-bin and its
   * libraries): how many files and bytes; throws, with the package to install, when incomplete.
   */
  guestToolkit(): Promise<{ files: number; bytes: number }>;
  /** How the running daemon networks VMs (and what failed); null when no daemon runs. */
  daemonNetwork?: () => Promise<NetworkStatus | null>;
}

/** `mke2fs 1.47.0 (5-Feb-2023)` → [1, 47, 0] */
export function parseE2fsprogsVersion(text: string): [number, number, number] | null {
  const m = /mke2fs (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : null;
}

function atLeast(have: number[], want: number[]): boolean {
  for (let i = 0; i < want.length; i++) {
    const h = have[i] ?? 0;
    const w = want[i] ?? 0;
    if (h !== w) return h > w;
  }
  return true;
}

const APT_FIX = (pkgs: string) =>
  `sudo apt-get install ${pkgs}   (or run 'make demo' in the banger checkout)`;

async function firstLine(runner: CommandRunner, cmd: string, args: string[]): Promise<string> {
  const r = await runner.run(cmd, args, { timeoutMs: 10_000 });
  return `${r.stdout}${r.stderr}`.trim().split("\n")[0] ?? "";
}

export function defaultChecks(deps: DoctorDeps): DoctorCheck[] {
  const { runner } = deps;
  return [
    {
      name: "node",
      async run() {
        const [major = 0, minor = 0] = deps.nodeVersion.replace(/^v/, "").split(".").map(Number);
        return atLeast([major, minor], [20, 11])
          ? { status: "ok", detail: `Node.js ${deps.nodeVersion}` }
          : {
              status: "fail",
              detail: `Node.js ${deps.nodeVersion} is too old`,
              fix: "install Node.js 20.11 or newer",
            };
      },
    },
    {
      name: "accel",
      async run() {
        const accel = await detectAccel(deps.accel);
        if (accel.kind === "kvm") return { status: "ok", detail: "KVM" };
        return {
          status: "warn",
          detail: `software emulation (TCG): VMs will be slow; ${accel.reason}`,
          fix: "run on a host with hardware virtualisation (vmx/svm) and access to /dev/kvm for full speed",
        };
      },
    },
    {
      name: "qemu",
      async run() {
        const missing = [];
        if (!(await runner.which("qemu-system-x86_64"))) missing.push("qemu-system-x86_64");
        if (!(await runner.which("qemu-img"))) missing.push("qemu-img");
        if (missing.length > 0) {
          return {
            status: "fail",
            detail: `${missing.join(" and ")} not found`,
            fix: APT_FIX("qemu-system-x86 qemu-utils"),
          };
        }
        return {
          status: "ok",
          detail: await firstLine(runner, "qemu-system-x86_64", ["--version"]),
        };
      },
    },
    {
      name: "e2fsprogs",
      async run() {
        if (!(await runner.which("mkfs.ext4"))) {
          return { status: "fail", detail: "mkfs.ext4 not found", fix: APT_FIX("e2fsprogs") };
        }
        const version = parseE2fsprogsVersion(await firstLine(runner, "mkfs.ext4", ["-V"]));
        if (!version)
          return {
            status: "warn",
            detail: "cannot tell the mkfs.ext4 version",
            fix: APT_FIX("e2fsprogs"),
          };
        const text = version.join(".");
        if (!atLeast(version, [1, 43, 0])) {
          return {
            status: "fail",
            detail: `mkfs.ext4 ${text} is older than 1.43 (no -d support)`,
            fix: APT_FIX("e2fsprogs"),
          };
        }
        if (!(await runner.which("debugfs")))
          return { status: "fail", detail: "debugfs not found", fix: APT_FIX("e2fsprogs") };
        return { status: "ok", detail: `mkfs.ext4 ${text} and debugfs` };
      },
    },
    {
      name: "toolkit",
      async run() {
        try {
          const { files, bytes } = await deps.guestToolkit();
          const mib = (bytes / 2 ** 20).toFixed(1);
          return {
            status: "ok",
            detail: `busybox and dropbear for images without a shell or sshd: ${files} files, ${mib} MiB per image`,
          };
        } catch (err) {
          const hint = (err as { hint?: unknown }).hint;
          return {
            status: "fail",
            detail: `${(err as Error).message}: container images without sshd cannot be finalised`,
            fix: typeof hint === "string" ? hint : APT_FIX("busybox-static dropbear-bin"),
          };
        }
      },
    },
    {
      name: "ssh",
      async run() {
        if (!(await runner.which("ssh")))
          return { status: "fail", detail: "ssh not found", fix: APT_FIX("openssh-client") };
        return { status: "ok", detail: await firstLine(runner, "ssh", ["-V"]) };
      },
    },
    {
      name: "passt",
      async run() {
        // Only user-mode VMs with --nat need it; everything else works without.
        if (!(await runner.which("passt")))
          return {
            status: "warn",
            detail: "passt not found: --nat VMs cannot start on user-mode networking",
            fix: APT_FIX("passt"),
          };
        return { status: "ok", detail: "passt: user-mode VMs can have --nat egress" };
      },
    },
    {
      name: "builder",
      async run() {
        // Only `image build -f` needs it; everything else works without.
        if (await runner.which("buildah"))
          return {
            status: "ok",
            detail: `${await firstLine(runner, "buildah", ["--version"])}: 'image build -f' builds Dockerfiles with it`,
          };
        const podman = await runner.which("podman");
        return {
          status: "warn",
          detail: podman
            ? "podman is installed, but banger builds Dockerfiles with Buildah only: 'image build -f' cannot run"
            : "no buildah: 'image build -f' (Dockerfiles) cannot run",
          fix: APT_FIX("buildah"),
        };
      },
    },
    {
      name: "tun",
      async run() {
        return (await deps.canOpenRw("/dev/net/tun"))
          ? { status: "ok", detail: "/dev/net/tun opens: bridge networking is possible" }
          : {
              status: "warn",
              detail:
                "/dev/net/tun cannot be opened: VMs fall back to user-mode networking (no <name>.vm names)",
              fix: "sudo modprobe tun, or run where /dev/net/tun is available",
            };
      },
    },
    {
      name: "helper",
      async run() {
        const probe = await deps.probePrivileged();
        if (probe.mode === "root")
          return { status: "ok", detail: "running as root: privileged steps run in-process" };
        if (probe.mode === "helper")
          return {
            status: "ok",
            detail: `banger-helper answers at ${probe.socket} (serves uid ${probe.servedUid}, bridge ${probe.bridge}, subnet ${probe.subnet}): bridge networking is possible`,
          };
        return {
          status: "warn",
          detail: `${probe.reason}; VMs use user-mode networking (no <name>.vm names)`,
          fix: `sudo banger system install   (or once, by hand: sudo banger-helper --user ${deps.userName}; see docs/system.md)`,
        };
      },
    },
    {
      name: "bridge",
      async run() {
        // Only a running daemon knows whether its bridge set-up worked; doctor never starts one.
        const net = deps.daemonNetwork ? await deps.daemonNetwork() : null;
        if (!net)
          return {
            status: "ok",
            detail:
              "bangerd is not running: bridge set-up is tried (and reported here) when it starts",
          };
        if (net.problem)
          return {
            status: "fail",
            detail: `${net.problem}; VMs fall back to user-mode networking (no <name>.vm names)`,
            ...(net.hint ? { fix: net.hint } : {}),
          };
        return net.mode === "bridge"
          ? {
              status: "ok",
              detail: `bangerd runs bridge networking on ${net.bridge ?? "?"} (${net.reason})`,
            }
          : { status: "ok", detail: `bangerd runs user-mode networking (${net.reason})` };
      },
    },
    {
      name: "vm defaults",
      async run() {
        const where = (await deps.configExists())
          ? deps.configFile
          : `${deps.configFile} (not present: using defaults)`;
        return { status: "ok", detail: `${await deps.describeVmDefaults()}; config: ${where}` };
      },
    },
  ];
}

const MARKS: Record<CheckStatus, string> = { ok: "✓", warn: "!", fail: "✗" };

export function formatReport(report: DoctorReport, opts: { color: boolean }): string {
  const paint: Record<CheckStatus, (s: string) => string> = opts.color
    ? { ok: pc.green, warn: pc.yellow, fail: pc.red }
    : { ok: (s) => s, warn: (s) => s, fail: (s) => s };
  const width = Math.max(...report.checks.map((c) => c.name.length));
  const lines = report.checks.map((c) => {
    let line = `${paint[c.status](MARKS[c.status])} ${c.name.padEnd(width)}  ${c.detail}`;
    if (c.fix && c.status !== "ok") line += `\n  ${" ".repeat(width)}  fix: ${c.fix}`;
    return line;
  });
  const failed = report.checks.filter((c) => c.status === "fail").length;
  const warned = report.checks.filter((c) => c.status === "warn").length;
  lines.push(
    "",
    failed > 0
      ? `${failed} check(s) failed`
      : warned > 0
        ? `ready, with ${warned} warning(s)`
        : "ready",
  );
  return `${lines.join("\n")}\n`;
}
