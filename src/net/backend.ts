import type { DriverFeatures, VmHandles, VmSpec } from "../vmm/driver.js";

/** What a network hands a VM it attaches: the VMM's side, the guest's side and what to undo later. */
export interface NetworkAttachment {
  /** The VMM's network device (VmSpec.network). */
  vmm: VmSpec["network"];
  /** The guest's address, gateway and resolver, as `banger.ip/gw/dns` kernel arguments. */
  kernelArgs: string[];
  /** The guest's address, kept on the VM's row. */
  ip: string;
  mac: string | null;
  /** What this network holds for the VM, carried in its handles until release. */
  handles: NetworkHandles;
}

/** The network's part of a VM's handles. */
export type NetworkHandles = Pick<VmHandles, "tap" | "userNet">;

/** The VM being attached: its row's identity and intent. */
export interface NetworkVm {
  id: string;
  name: string;
  ip: string | null;
  nat: boolean;
}

/**
 * One way to network VMs (bridge + taps, or rootless user-mode). Attach hands out what one
 * start needs; release and adopt act only on what is this network's in the handles, so a VM
 * started under another mode (an earlier daemon's) is released by the network that holds it.
 */
export interface NetworkBackend {
  attachVm(
    vm: NetworkVm,
    opts: { vmDir: string; driver: DriverFeatures; progress: (message: string) => void },
  ): Promise<NetworkAttachment>;
  /**
   * The VM stopped, or (`failed`) never started: give back what these handles hold of this
   * network. Best-effort steps are the caller's to log.
   */
  releaseVm(handles: NetworkHandles, vmDir: string, opts?: { failed?: boolean }): Promise<void>;
  /** A running VM found at start-up: put back what it was given (logs what it cannot). */
  adoptVm(vm: NetworkVm, handles: NetworkHandles, vmDir: string): Promise<void>;
}
