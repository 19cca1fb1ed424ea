/** What a VMM needs to boot one VM. Paths are absolute. */
export interface VmSpec {
  id: string;
  name: string;
  vcpu: number;
  memoryBytes: number;
  accel: "kvm" | "tcg";
  kernel: {
    vmlinuz: string | null;
    vmlinux: string | null;
    initrd: string | null;
    cmdline: string;
  };
  /** Root disk: the driver's own copy-on-write root (Driver.rootDisk.path). */
  rootDisk: string;
  workDisk: string;
  /** Format of the work disk file: raw (a VM's own ext4) or qcow2 (a clone's overlay over a snapshot's). */
  workDiskFormat?: "raw" | "qcow2";
  /** Per-VM directory for sockets, pid file and console log. */
  dir: string;
  /**
   * Restore the saved state a snapshot holds (its memory and device file) instead of booting the
   * kernel; the disks must be the snapshot's (a clone's overlays over them). The VM starts paused
   * until `adopt` runs it, like a boot.
   */
  restore?: { memory: string };
  /** The console log keeps the newest this many bytes (config console_log_size). */
  consoleLogBytes?: number;
  network:
    | {
        mode: "user";
        sshPort: number;
        /** With egress (--nat): the stream socket of banger's filter in front of passt. Without: QEMU's slirp, restricted. */
        stream?: string;
      }
    | { mode: "tap"; tap: string; mac: string; ip: string };
}

/** What is true about a started VM right now; persisted as handles.json. */
export interface VmHandles {
  vmm: "qemu" | "firecracker";
  pid: number;
  controlSocket: string;
  consoleLog: string;
  /** QEMU: the console's socket, which the daemon reads into a bounded log (absent: an older plain file). */
  consoleSocket?: string;
  sshHost: string;
  sshPort: number;
  tap: string | null;
  /**
   * The unix socket of the VM's identity channel (QEMU: a virtio-serial port named
   * banger.identity): how a restored guest learns its new name, address, clock and entropy.
   */
  identitySocket?: string;
  /** User-mode egress helpers (passt and banger's frame filter), detached like the VMM. */
  userNet?: { passtPid: number; relayPid: number; socket: string } | null;
}

/** What a VMM can do; callers read these instead of the driver's name. */
export interface DriverFeatures {
  /** Boots with user-mode networking (no tap); without it the VM needs bridge networking. */
  userNetworking: boolean;
  /** Runs only under KVM (no software emulation). */
  needsKvm: boolean;
  /** Can save a running VM to files and restore it (Driver.snapshot is there). */
  snapshot: boolean;
  /** Can add port forwards to a running VM (not built yet: no caller). */
  hotplugPorts: boolean;
}

/** A VM's root disk as the driver keeps it: a copy-on-write root over the image's read-only rootfs. */
export interface RootDisk {
  /** Where it lives in the VM's directory. */
  path(vmDir: string): string;
  /** Makes it from the image's rootfs; the file is the user's alone (mode 0600). */
  prepare(backing: string, vmDir: string): Promise<void>;
  /** Bytes it really takes on the host (allocated blocks, not its apparent size). */
  usedBytes(vmDir: string): Promise<number>;
}

/** What `Driver.snapshot.save` writes into a snapshot's directory (names in SNAPSHOT_FILES). */
export interface SaveRequest {
  /** The snapshot's directory: exists and is empty; every file goes here. */
  dir: string;
  /** The VM's own directory (its disks, sockets). */
  vmDir: string;
  /** The image's rootfs: a saved root disk keeps only what differs from it. */
  imageRootfs: string;
  /** The VM's work disk as it runs now (its own raw ext4, or a clone's qcow2 overlay). */
  workDisk: { file: string; format: "raw" | "qcow2" };
  /** Run the VM again afterwards; false leaves its VMM stopped (the VM's state is then "stopped"). */
  resume: boolean;
  /** Bounds the whole save (pause, memory, disks). */
  deadlineMs: number;
}

export interface SavedState {
  /** The VMM and its version (`describe()`), which a restore must match. */
  vmmVersion: string;
  /** Bytes the snapshot's files take on the host (allocated). */
  bytes: number;
  /** How long the guest was paused, in ms. */
  pausedMs: number;
}

/** A VM's work disk file in its directory, by format: its own ext4, or a clone's overlay. */
export const WORK_DISK_FILES = { raw: "work.ext4", qcow2: "work.qcow2" } as const;

/** The files of a snapshot's directory. */
export const SNAPSHOT_FILES = {
  /** Memory and device state, as the VMM saved it (Firecracker: guest memory only). */
  memory: "memory",
  /** Firecracker: the device and vCPU state (its snapshot_path), beside the memory. */
  vmstate: "vmstate",
  /** The root disk at the paused instant (QEMU: qcow2 over the image's rootfs). */
  rootDisk: "root.disk",
  /** The work disk at the paused instant (raw ext4). */
  workDisk: "work.disk",
} as const;

/** Saving a running VM and making the disks of VMs restored from it. */
export interface SnapshotSupport {
  /**
   * Pauses the VM, writes memory, device state and both disks as they were at that one paused
   * instant into `req.dir`, then resumes it (or stops its VMM). A failure resumes the VM when
   * it can and leaves `req.dir`'s contents for the caller to remove.
   */
  save(handles: VmHandles, req: SaveRequest): Promise<SavedState>;
  /**
   * A clone's root disk (at rootDisk.path(vmDir)) and work disk (WORK_DISK_FILES[format] in
   * `vmDir`), made from a snapshot's (QEMU: qcow2 overlays, O(1) in their size). Returns the
   * work disk's format.
   */
  cloneDisks(snapshotDir: string, vmDir: string): Promise<"raw" | "qcow2">;
}

export interface Driver {
  readonly name: "qemu" | "firecracker";
  readonly features: DriverFeatures;
  readonly rootDisk: RootDisk;
  /** The VMM is gone: remove what it left in the VM's directory (its control socket). */
  removeFiles(vmDir: string): Promise<void>;
  start(spec: VmSpec): Promise<VmHandles>;
  /**
   * Graceful shutdown; kills at the deadline, which bounds the whole call (the request to the
   * VMM included: a frozen VMM never answers it). Resolves once the process is gone.
   */
  stop(handles: VmHandles, deadlineMs: number): Promise<void>;
  kill(handles: VmHandles): Promise<void>;
  /** Is this VMM process alive and is it the one the handles describe? */
  status(handles: VmHandles): Promise<"running" | "stopped">;
  /** A running VM found at daemon start-up: take its console back (and let it run). */
  adopt?(handles: VmHandles, consoleLogBytes: number): Promise<void>;
  /**
   * A VMM this driver started in `vmDir` that no handles recorded (a daemon killed between
   * starting it and writing its handles: during a boot's or a restore's load): kill it and
   * remove its files. True when there was one.
   */
  killStray?(vmDir: string): Promise<boolean>;
  /** The VM is gone: let go of what the daemon held for it (its console). */
  release?(handles: VmHandles): void;
  /**
   * The VMM has exited: resolves once what it last wrote to the console is in the log (QEMU:
   * the console socket reached its end), or after `timeoutMs`.
   */
  consoleEnded?(handles: VmHandles, timeoutMs: number): Promise<void>;
  /**
   * Calls `listener` when one of its VMMs may have exited (QEMU: a console socket the VMM
   * closed), so the daemon need not wait for its next poll to notice. Returns the unsubscribe.
   */
  onExit?(listener: () => void): () => void;
  describe(): Promise<string>;
  /** Present when `features.snapshot` is true. */
  readonly snapshots?: SnapshotSupport;
}
