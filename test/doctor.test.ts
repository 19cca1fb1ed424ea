import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import { promisify } from "node:util";
import { test } from "node:test";
import { detectAccel, resolveAccel, tcgKernelArgs, type AccelDeps } from "../src/system/accel.js";
import {
  defaultChecks,
  parseE2fsprogsVersion,
  runChecks,
  formatReport,
  type DoctorDeps,
} from "../src/system/doctor.js";
import type { CommandResult, CommandRunner } from "../src/system/runner.js";
import { BangerError, ErrorCode } from "../src/api/errors.js";
import { createCommandRunner } from "../src/system/runner.js";
import { canOpenReadWrite, realAccelDeps } from "../src/system/accel.js";
import { probePrivileged } from "../src/net/privileged-mode.js";

const VMX = "processor\t: 0\nflags\t\t: fpu vme de pse vmx sse\n";
const NO_VMX = "processor\t: 0\nflags\t\t: fpu vme de pse sse\n";

function accelDeps(cpuinfo: string, kvmOpens: boolean): AccelDeps {
  return { readFile: async () => cpuinfo, canOpenRw: async () => kvmOpens };
}

/** Every check doctor runs, in order. */
const CHECK_NAMES = [
  "node",
  "accel",
  "qemu",
  "e2fsprogs",
  "toolkit",
  "ssh",
  "passt",
  "builder",
  "tun",
  "helper",
  "bridge",
  "vm defaults",
];

test("accel: vmx and an openable /dev/kvm mean KVM", async () => {
  assert.equal((await detectAccel(accelDeps(VMX, true))).kind, "kvm");
});

test("accel: /dev/kvm without vmx/svm is PVM and means TCG", async () => {
  const d = await detectAccel(accelDeps(NO_VMX, true));
  assert.equal(d.kind, "tcg");
  assert.match(d.reason, /PVM/);
});

test("accel: no /dev/kvm means TCG", async () => {
  assert.equal((await detectAccel(accelDeps(NO_VMX, false))).kind, "tcg");
  const d = await detectAccel(accelDeps(VMX, false));
  assert.equal(d.kind, "tcg");
  assert.match(d.reason, /kvm group/);
});

test("accel setting: auto follows the host, tcg always works, kvm fails clearly when unusable", async () => {
  const tcgHost = await detectAccel(accelDeps(NO_VMX, true));
  const kvmHost = await detectAccel(accelDeps(VMX, true));
  assert.equal(resolveAccel("auto", tcgHost), "tcg");
  assert.equal(resolveAccel("auto", kvmHost), "kvm");
  assert.equal(resolveAccel("tcg", kvmHost), "tcg");
  assert.throws(
    () => resolveAccel("kvm", tcgHost),
    (err: unknown) => err instanceof BangerError && /accel = "auto"/.test(err.hint ?? ""),
  );
});

test("e2fsprogs version parsing", () => {
  assert.deepEqual(parseE2fsprogsVersion("mke2fs 1.47.0 (5-Feb-2023)"), [1, 47, 0]);
  assert.deepEqual(parseE2fsprogsVersion("mke2fs 1.43 (17-May-2016)"), [1, 43, 0]);
  assert.deepEqual(parseE2fsprogsVersion("mke2fs 1.42.9 (28-Dec-2013)"), [1, 42, 9]);
  assert.equal(parseE2fsprogsVersion("something else"), null);
});

/** A runner whose tools and outputs are scripted. */
function fakeRunner(tools: Record<string, string>): CommandRunner {
  return {
    which: async (cmd) => (cmd in tools ? `/usr/bin/${cmd}` : null),
    run: async (cmd): Promise<CommandResult> => ({
      code: 0,
      signal: null,
      stdout: "",
      stderr: tools[cmd] ?? "",
    }),
  };
}

function doctorDeps(over: Partial<DoctorDeps> = {}): DoctorDeps {
  return {
    runner: fakeRunner({
      "qemu-system-x86_64": "QEMU emulator version 7.2.0",
      "qemu-img": "qemu-img version 7.2.0",
      "mkfs.ext4": "mke2fs 1.47.0 (5-Feb-2023)",
      debugfs: "debugfs 1.47.0",
      ssh: "OpenSSH_9.2p1",
      passt: "",
      buildah: "buildah version 1.28.2 (image-spec 1.1.0-rc2, runtime-spec 1.0.2-dev)",
    }),
    accel: accelDeps(VMX, true),
    canOpenRw: async () => true,
    nodeVersion: "v20.20.2",
    guestToolkit: async () => ({ files: 10, bytes: 6_269_264 }),
    describeVmDefaults: async () => "vcpu 1 (builtin)",
    configFile: "/home/you/.config/banger/config.toml",
    configExists: async () => false,
    probePrivileged: async () => ({ mode: "root" }),
    userName: "you",
    ...over,
  };
}

function statusOf(report: Awaited<ReturnType<typeof runChecks>>, name: string): string | undefined {
  return report.checks.find((c) => c.name === name)?.status;
}

test("doctor: a complete KVM host is all ok", async () => {
  const report = await runChecks(defaultChecks(doctorDeps()));
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.checks.map((c) => c.status),
    report.checks.map(() => "ok"),
  );
  assert.deepEqual(
    report.checks.map((c) => c.name),
    CHECK_NAMES,
  );
});

test("doctor: a daemon whose bridge set-up failed is a failure that says what failed and what to do", async () => {
  const failed = await runChecks(
    defaultChecks(
      doctorDeps({
        daemonNetwork: async () => ({
          mode: "user",
          reason: "bridge networking failed",
          bridge: null,
          problem: "bridge set-up failed: the subnet is in use",
          hint: "pick another [network] subnet",
        }),
      }),
    ),
  );
  assert.equal(failed.ok, false);
  const check = failed.checks.find((c) => c.name === "bridge")!;
  assert.equal(check.status, "fail");
  assert.match(
    check.detail,
    /bridge set-up failed: the subnet is in use; VMs fall back to user-mode/,
  );
  assert.equal(check.fix, "pick another [network] subnet");
  const bridged = await runChecks(
    defaultChecks(
      doctorDeps({
        daemonNetwork: async () => ({
          mode: "bridge",
          reason: "running as root",
          bridge: "banger0",
          problem: null,
          hint: null,
        }),
      }),
    ),
  );
  assert.equal(statusOf(bridged, "bridge"), "ok");
  assert.match(
    bridged.checks.find((c) => c.name === "bridge")!.detail,
    /bridge networking on banger0/,
  );
  const none = await runChecks(defaultChecks(doctorDeps({ daemonNetwork: async () => null })));
  assert.equal(statusOf(none, "bridge"), "ok");
  assert.match(none.checks.find((c) => c.name === "bridge")!.detail, /bangerd is not running/);
});

test("doctor: TCG and no tun are warnings, not failures", async () => {
  const report = await runChecks(
    defaultChecks(doctorDeps({ accel: accelDeps(NO_VMX, true), canOpenRw: async () => false })),
  );
  assert.equal(report.ok, true);
  assert.equal(statusOf(report, "accel"), "warn");
  assert.match(
    report.checks.find((c) => c.name === "accel")!.detail,
    /software emulation \(TCG\): VMs will be slow/,
  );
  assert.equal(statusOf(report, "tun"), "warn");
});

test("doctor: an unreachable helper is a warning that says how to start it", async () => {
  const report = await runChecks(
    defaultChecks(
      doctorDeps({
        probePrivileged: async () => ({
          mode: "none",
          socket: "/run/banger-helper/1000.sock",
          reason: "banger-helper is not reachable at /run/banger-helper/1000.sock (ENOENT)",
        }),
      }),
    ),
  );
  assert.equal(report.ok, true);
  const helper = report.checks.find((c) => c.name === "helper")!;
  assert.equal(helper.status, "warn");
  assert.match(helper.detail, /not reachable at \/run\/banger-helper\/1000\.sock.*user-mode/);
  assert.match(helper.fix ?? "", /sudo banger system install/);
  assert.match(helper.fix ?? "", /sudo banger-helper --user you/);
  const reachable = await runChecks(
    defaultChecks(
      doctorDeps({
        probePrivileged: async () => ({
          mode: "helper",
          socket: "/run/h.sock",
          servedUid: 1000,
          bridge: "banger1",
          subnet: "172.30.1.0/24",
        }),
      }),
    ),
  );
  assert.match(
    reachable.checks.find((c) => c.name === "helper")!.detail,
    /banger-helper answers at \/run\/h\.sock \(serves uid 1000, bridge banger1, subnet 172\.30\.1\.0\/24\)/,
  );
});

test("doctor: missing tools, old e2fsprogs and old node fail with a fix", async () => {
  const report = await runChecks(
    defaultChecks(
      doctorDeps({
        runner: fakeRunner({ "mkfs.ext4": "mke2fs 1.42.9 (28-Dec-2013)", debugfs: "" }),
        nodeVersion: "v18.19.0",
      }),
    ),
  );
  assert.equal(report.ok, false);
  for (const name of ["node", "qemu", "e2fsprogs", "ssh"]) {
    const check = report.checks.find((c) => c.name === name)!;
    assert.equal(check.status, "fail", name);
    assert.ok(check.fix, `${name} has a fix`);
  }
  assert.match(report.checks.find((c) => c.name === "e2fsprogs")!.detail, /older than 1\.43/);
  assert.match(
    formatReport(report, { color: false }),
    /✗ qemu .*not found\n\s+fix: sudo apt-get install qemu-system-x86 qemu-utils/,
  );
});

test("doctor: a host without dropbear-bin fails the toolkit check with the package to install", async () => {
  const report = await runChecks(
    defaultChecks(
      doctorDeps({
        guestToolkit: async () => {
          throw new BangerError(
            ErrorCode.Precondition,
            "/usr/sbin/dropbear is missing (banger copies it into every image: the SSH server for images without sshd)",
            "sudo apt-get install dropbear-bin",
          );
        },
      }),
    ),
  );
  const toolkit = report.checks.find((c) => c.name === "toolkit")!;
  assert.equal(toolkit.status, "fail");
  assert.match(toolkit.detail, /\/usr\/sbin\/dropbear is missing/);
  assert.equal(toolkit.fix, "sudo apt-get install dropbear-bin");
  assert.equal(report.ok, false);
});

test("doctor: without passt, --nat on user-mode networking is a warning with the fix", async () => {
  const report = await runChecks(
    defaultChecks(doctorDeps({ runner: fakeRunner({ ssh: "OpenSSH_9.2p1" }) })),
  );
  const passt = report.checks.find((c) => c.name === "passt")!;
  assert.equal(passt.status, "warn");
  assert.match(passt.detail, /--nat/);
  assert.match(passt.fix ?? "", /apt-get install passt/);
});

test("doctor: the builder check names buildah when it is there, and the package when it is not", async () => {
  const builder = async (tools: Record<string, string>) =>
    (await runChecks(defaultChecks(doctorDeps({ runner: fakeRunner(tools) })))).checks.find(
      (c) => c.name === "builder",
    )!;
  const found = await builder({ buildah: "buildah version 1.28.2 (image-spec 1.1.0-rc2)" });
  assert.equal(found.status, "ok");
  assert.match(found.detail, /^buildah version 1\.28\.2 .*'image build -f'/);
  const none = await builder({});
  assert.equal(none.status, "warn");
  assert.match(none.detail, /no buildah: 'image build -f'/);
  assert.match(none.fix ?? "", /apt-get install buildah/);
  const podmanOnly = await builder({ podman: "podman version 4.3.1" });
  assert.equal(podmanOnly.status, "warn");
  assert.match(
    podmanOnly.detail,
    /podman is installed, but banger builds Dockerfiles with Buildah only/,
  );
  assert.match(podmanOnly.fix ?? "", /apt-get install buildah/);
});

test("doctor: a check that throws or hangs is a failure, not a crash", async () => {
  const report = await runChecks(
    [
      { name: "boom", run: async () => Promise.reject(new Error("kaput")) },
      { name: "hang", run: () => new Promise(() => {}) },
      { name: "fine", run: async () => ({ status: "ok", detail: "yes" }) },
    ],
    200,
  );
  assert.equal(report.ok, false);
  assert.deepEqual(
    report.checks.map((c) => [c.name, c.status]),
    [
      ["boom", "fail"],
      ["hang", "fail"],
      ["fine", "ok"],
    ],
  );
  assert.equal(report.checks[0]!.detail, "kaput");
});

test("doctor: the real checks run on this machine and give what this machine has", async () => {
  const uid = process.getuid?.() ?? 0;
  const report = await runChecks(
    defaultChecks({
      ...doctorDeps(),
      runner: createCommandRunner(),
      accel: realAccelDeps(),
      canOpenRw: canOpenReadWrite,
      nodeVersion: process.version,
      probePrivileged: () => probePrivileged({ env: {}, uid, configuredSocket: null }),
    }),
  );
  const check = (name: string) => {
    const c = report.checks.find((x) => x.name === name);
    assert.ok(c, `a ${name} check`);
    return c;
  };
  const expect = (name: string, status: string, detail: RegExp) => {
    const c = check(name);
    assert.equal(c.status, status, `${name}: ${c.detail}`);
    assert.match(c.detail, detail, name);
  };
  assert.deepEqual(
    report.checks.map((c) => c.name),
    CHECK_NAMES,
  );
  // What the suite itself needs is here, so these are ok, with the real tools' versions.
  expect("node", "ok", new RegExp(`^Node\\.js ${process.version.replace(/\./g, "\\.")}$`));
  expect("qemu", "ok", /^QEMU emulator version \d+\.\d+/);
  expect("e2fsprogs", "ok", /^mkfs\.ext4 1\.\d+\.\d+ and debugfs$/);
  expect("ssh", "ok", /^OpenSSH_\d/);
  // The suite builds Dockerfiles with buildah (scripts/setup.sh installs it).
  expect("builder", "ok", /^buildah version \d+\.\d+/);
  expect("vm defaults", "ok", /\(not present: using defaults\)$/);
  // The rest follows facts read here independently of the checks.
  const cpuinfo = await fs.readFile("/proc/cpuinfo", "utf8");
  const kvm = /\b(vmx|svm)\b/.test(cpuinfo) && (await canOpenReadWrite("/dev/kvm"));
  if (kvm) expect("accel", "ok", /^KVM$/);
  else expect("accel", "warn", /^software emulation \(TCG\)/);
  const passt = await promisify(execFile)("sh", ["-c", "command -v passt"]).then(
    () => true,
    () => false,
  );
  if (passt) expect("passt", "ok", /^passt: /);
  else expect("passt", "warn", /^passt not found/);
  if (await canOpenReadWrite("/dev/net/tun")) expect("tun", "ok", /opens/);
  else expect("tun", "warn", /cannot be opened/);
  // As root the privileged steps run in-process; otherwise it depends on a running helper.
  if (uid === 0) expect("helper", "ok", /^running as root/);
  // No daemon is asked here (daemonNetwork unset): doctor never starts one to find out.
  expect("bridge", "ok", /^bangerd is not running/);
  assert.equal(
    report.ok,
    report.checks.every((c) => c.status !== "fail"),
  );
  assert.equal(report.ok, true, "nothing fails on a machine that runs this suite");
});

test("TCG guests are told the host TSC frequency instead of calibrating it", () => {
  assert.deepEqual(tcgKernelArgs("processor\t: 0\ncpu MHz\t\t: 2445.426\n"), [
    "tsc_early_khz=2445426",
  ]);
  assert.deepEqual(tcgKernelArgs("no frequency here"), []);
});
