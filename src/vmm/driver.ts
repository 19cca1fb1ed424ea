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
  /** Per-VM directory for sockets, pid file and console log. */
  dir: string;
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
  /** User-mode egress helpers (passt and banger's frame filter), detached like the VMM. */
  userNet?: { passtPid: number; relayPid: number; socket: string } | null;
}

/** What a VMM can do; callers read these instead of the driver's name. */
export interface DriverFeatures {
  /** Boots with user-mode networking (no tap); without it the VM needs bridge networking. */
  userNetworking: boolean;
  /** Runs only under KVM (no software emulation). */
  needsKvm: boolean;
  /** Can save a running VM to a file and restore it (not built yet: no caller). */
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
}
