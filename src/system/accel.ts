import fs from "node:fs/promises";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { AccelSetting } from "../config/config.js";

export interface AccelDeps {
  readFile(path: string): Promise<string>;
  canOpenRw(path: string): Promise<boolean>;
}

export interface AccelDetection {
  kind: "kvm" | "tcg";
  reason: string;
}

/**
 * KVM only when the CPU exposes vmx/svm *and* /dev/kvm opens. A /dev/kvm
 * without those flags is PVM-based: stock guest kernels hang under it.
 */
export async function detectAccel(deps: AccelDeps): Promise<AccelDetection> {
  const cpuinfo = await deps.readFile("/proc/cpuinfo").catch(() => "");
  const hasVirtFlags = /^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo);
  const kvmOpens = await deps.canOpenRw("/dev/kvm");
  if (hasVirtFlags && kvmOpens)
    return { kind: "kvm", reason: "the CPU exposes hardware virtualisation and /dev/kvm opens" };
  if (kvmOpens) {
    return {
      kind: "tcg",
      reason:
        "/dev/kvm exists but the CPU exposes no vmx/svm (PVM-based KVM); stock guest kernels hang under it",
    };
  }
  if (hasVirtFlags) {
    return {
      kind: "tcg",
      reason:
        "the CPU supports virtualisation but /dev/kvm cannot be opened (missing, or no permission: join the kvm group)",
    };
  }
  return { kind: "tcg", reason: "no hardware virtualisation on this machine" };
}

/** Applies the config's `accel` setting to what the host offers. */
export function resolveAccel(setting: AccelSetting, detected: AccelDetection): "kvm" | "tcg" {
  if (setting === "tcg") return "tcg";
  if (setting === "kvm" && detected.kind !== "kvm") {
    throw new BangerError(
      ErrorCode.Precondition,
      `accel = "kvm" is set but KVM is not usable here: ${detected.reason}`,
      'set accel = "auto" (or "tcg") in config.toml to use software emulation',
    );
  }
  return detected.kind;
}

export function realAccelDeps(): AccelDeps {
  return {
    readFile: (p) => fs.readFile(p, "utf8"),
    canOpenRw: canOpenReadWrite,
  };
}

export async function canOpenReadWrite(p: string): Promise<boolean> {
  try {
    const handle = await fs.open(p, "r+");
    await handle.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Kernel arguments a guest needs under TCG. The guest's TSC is the host's
 * (QEMU reads the host counter), but calibrating it against the emulated PIT
 * fails when the host is busy, and the guest then stalls with no usable clock.
 * Telling it the frequency skips calibration.
 */
export function tcgKernelArgs(cpuinfo: string): string[] {
  const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)?.[1];
  if (!mhz) return [];
  const khz = Math.round(Number(mhz) * 1000);
  return Number.isFinite(khz) && khz > 0 ? [`tsc_early_khz=${khz}`] : [];
}
