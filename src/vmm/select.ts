import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmmSetting } from "../config/config.js";
import type { DriverFeatures } from "./driver.js";
import { FIRECRACKER_FEATURES } from "./firecracker/driver.js";

/**
 * `vmm = auto` picks Firecracker when its binary is found and what its features need is
 * here (KVM; bridge networking, as it has no user-mode networking); QEMU otherwise.
 * An explicit choice that cannot work here fails clearly.
 */
export function selectVmm(
  setting: VmmSetting,
  accel: "kvm" | "tcg",
  haveFirecracker: boolean,
  haveBridge: boolean,
  firecracker: DriverFeatures = FIRECRACKER_FEATURES,
): "qemu" | "firecracker" {
  if (setting === "qemu") return "qemu";
  const accelOk = accel === "kvm" || !firecracker.needsKvm;
  const networkOk = haveBridge || firecracker.userNetworking;
  const usable = haveFirecracker && accelOk && networkOk;
  if (setting === "firecracker") {
    if (usable) return "firecracker";
    const why = !haveFirecracker
      ? "no firecracker binary on PATH"
      : !accelOk
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
