import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmmSetting } from "../config/config.js";

/**
 * `vmm = auto` picks Firecracker when its binary is found, KVM is usable and
 * bridge networking is up (it has no user-mode networking); QEMU otherwise.
 * An explicit choice that cannot work here fails clearly.
 */
export function selectVmm(
  setting: VmmSetting,
  accel: "kvm" | "tcg",
  haveFirecracker: boolean,
  haveBridge: boolean,
): "qemu" | "firecracker" {
  if (setting === "qemu") return "qemu";
  const usable = haveFirecracker && accel === "kvm" && haveBridge;
  if (setting === "firecracker") {
    if (usable) return "firecracker";
    const why = !haveFirecracker
      ? "no firecracker binary on PATH"
      : accel !== "kvm"
        ? "Firecracker needs KVM, and this host runs VMs under software emulation"
        : "Firecracker needs bridge networking (bangerd as root)";
    throw new BangerError(
      ErrorCode.Precondition,
      `vmm = "firecracker" is set but cannot work here: ${why}`,
      'set vmm = "auto" or "qemu" in config.toml',
    );
  }
  return usable ? "firecracker" : "qemu";
}
