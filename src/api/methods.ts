import { z } from "zod";

/**
 * The one table of RPC methods: name → param/result schemas and a summary.
 * The daemon registers exactly these; docs/internals/rpc.md lists exactly these (a test checks).
 */

const Empty = z.object({}).strict();
const NameParam = z.object({ name: z.string().min(1) }).strict();

export const Provenance = z.enum(["config", "auto", "builtin"]);

/**
 * How this daemon networks its VMs, and why. `problem` is set when bridge networking was wanted
 * (a helper or root was there to set it up) and failed, so VMs fell back to user-mode networking.
 */
export const NetworkStatus = z.object({
  mode: z.enum(["bridge", "user"]),
  reason: z.string(),
  bridge: z.string().nullable(),
  problem: z.string().nullable(),
  hint: z.string().nullable(),
});

export const DaemonStatus = z.object({
  pid: z.number().int(),
  version: z.string(),
  startedAt: z.string(),
  uptimeMs: z.number(),
  socket: z.string(),
  stateDir: z.string(),
  schemaVersion: z.number().int(),
  network: NetworkStatus.optional(),
});

export const VmInfo = z.object({
  id: z.string(),
  name: z.string(),
  state: z.string(),
  image: z.string().nullable(),
  kernel: z.string().nullable(),
  vcpu: z.number().int(),
  memoryBytes: z.number().int(),
  diskBytes: z.number().int(),
  ip: z.string().nullable(),
  vmm: z.string().nullable(),
  createdAt: z.string(),
  /** `vm show`: how the VM is (running) or will be (else) networked, and a bridge set-up failure. */
  network: z
    .object({
      mode: z.enum(["bridge", "user"]),
      problem: z.string().nullable(),
      hint: z.string().nullable(),
    })
    .optional(),
});

export const ImageInfo = z.object({
  id: z.string(),
  name: z.string(),
  kernel: z.string().nullable(),
  rootfsPath: z.string(),
  source: z.string().nullable(),
  digest: z.string().nullable(),
  sizeBytes: z.number().int().nullable(),
  managed: z.boolean(),
  createdAt: z.string(),
});

export const KernelInfo = z.object({
  name: z.string(),
  version: z.string().nullable(),
  source: z.string().nullable(),
  dir: z.string(),
  sha256: z.string().nullable(),
  createdAt: z.string(),
});

export const KernelDetail = KernelInfo.extend({
  cmdline: z.string().nullable(),
  files: z.object({
    vmlinux: z.string().nullable(),
    vmlinuz: z.string().nullable(),
    initrd: z.string().nullable(),
    modules: z.string().nullable(),
  }),
});

export const CatalogEntry = z.object({
  name: z.string(),
  state: z.enum(["pulled", "available"]),
  sizeBytes: z.number().int().nullable(),
  description: z.string(),
});

const VmCreateParams = z
  .object({
    name: z.string().optional(),
    image: z.string().optional(),
    kernelRef: z.string().optional(),
    vcpu: z.number().int().positive().optional(),
    memoryBytes: z.number().int().positive().optional(),
    diskBytes: z.number().int().positive().optional(),
    nat: z.boolean().optional(),
    start: z.boolean().optional(),
  })
  .strict();

/** A named process in a guest (`banger vm session`). */
export const SessionInfo = z.object({
  name: z.string(),
  state: z.enum(["running", "exited", "lost"]),
  pid: z.number().int().nullable(),
  exitCode: z.number().int().nullable(),
  startedAt: z.string().nullable(),
  cwd: z.string(),
  command: z.string(),
});

const SessionParam = z.object({ vm: z.string().min(1), name: z.string().min(1) }).strict();

const NamesParam = z.object({ names: z.array(z.string().min(1)).min(1) }).strict();

const PruneResult = z.object({
  freedBytes: z.number().int(),
  blobs: z.number().int(),
  dir: z.string(),
  dryRun: z.boolean(),
});

interface MethodSpec {
  params: z.ZodType;
  result: z.ZodType;
  summary: string;
  /** Long-running: the daemon streams `progress` notifications for it. */
  progress?: boolean;
}

export const methods = {
  "daemon.ping": {
    params: Empty,
    result: z.object({ pong: z.literal(true), version: z.string(), pid: z.number().int() }),
    summary: "Liveness check; returns the daemon's version and pid.",
  },
  "daemon.status": {
    params: Empty,
    result: DaemonStatus,
    summary:
      "Daemon facts: pid, uptime, paths, schema version, how VMs are networked (and a bridge set-up failure).",
  },
  "daemon.shutdown": {
    params: Empty,
    result: z.object({ stopping: z.literal(true) }),
    summary: "Stop the daemon after replying; running VMs keep running.",
  },

  "vm.list": { params: Empty, result: z.array(VmInfo), summary: "All VMs with their state." },
  "vm.show": { params: NameParam, result: VmInfo, summary: "One VM by name." },
  "vm.create": {
    params: VmCreateParams,
    result: VmInfo.extend({ warnings: z.array(z.string()) }),
    summary: "Create (and by default start) a VM; `warnings` lists skipped file_sync entries.",
    progress: true,
  },
  "vm.start": { params: NameParam, result: VmInfo, summary: "Start a stopped VM.", progress: true },
  "vm.stop": { params: NameParam, result: VmInfo, summary: "Stop a running VM gracefully." },
  "vm.restart": {
    params: NameParam,
    result: VmInfo,
    summary: "Stop then start a VM.",
    progress: true,
  },
  "vm.kill": { params: NameParam, result: VmInfo, summary: "Force-kill a VM's VMM process." },
  "vm.delete": {
    params: NamesParam,
    result: z.object({ deleted: z.array(z.string()) }),
    summary: "Stop VMs and remove their disks.",
  },
  "vm.prune": {
    params: Empty,
    result: z.object({
      deleted: z.array(z.string()),
      failed: z.array(z.object({ name: z.string(), error: z.string() })),
    }),
    summary: "Delete every VM that is not running.",
  },
  "vm.stats": {
    params: NameParam,
    result: z.object({
      name: z.string(),
      vcpu: z.number().int(),
      memoryBytes: z.number().int(),
      rssBytes: z.number().int().nullable(),
      cpuSeconds: z.number().nullable(),
      overlayBytes: z.number().int(),
      workDiskBytes: z.number().int(),
    }),
    summary: "Configured size, VMM RSS and CPU time, disk bytes used.",
  },
  "vm.ports": {
    params: NameParam,
    result: z.array(
      z.object({
        proto: z.string(),
        address: z.string(),
        port: z.number().int(),
        process: z.string().nullable(),
      }),
    ),
    summary: "Listening TCP/UDP sockets in the guest.",
  },
  "vm.set": {
    params: z
      .object({
        name: z.string().min(1),
        vcpu: z.number().int().positive().optional(),
        memoryBytes: z.number().int().positive().optional(),
      })
      .strict(),
    result: VmInfo,
    summary: "Change vcpu/memory of a stopped VM.",
  },
  "vm.health": {
    params: NameParam,
    result: z.object({ name: z.string(), vmm: z.boolean(), ssh: z.boolean(), detail: z.string() }),
    summary: "Is the VMM alive and does SSH answer.",
  },
  "vm.logs": {
    params: NameParam,
    result: z.object({ path: z.string() }),
    summary: "Path of the VM's serial console log.",
  },
  "vm.ssh": {
    params: NameParam,
    result: z.object({
      host: z.string(),
      port: z.number().int(),
      user: z.string(),
      identityFile: z.string(),
      knownHostsFile: z.string(),
    }),
    summary: "What OpenSSH needs to reach the VM.",
  },
  "vm.workspace.prepare": {
    params: z
      .object({
        name: z.string().min(1),
        path: z.string().min(1),
        branch: z.string().min(1).optional(),
        from: z.string().min(1).optional(),
      })
      .strict(),
    result: z.object({
      vm: z.string(),
      dir: z.string(),
      base: z.string(),
      files: z.number().int(),
      bytes: z.number().int(),
    }),
    summary: "Stream a host git repo (absolute path) into /root/<repo-name> in a running VM.",
    progress: true,
  },
  "vm.workspace.export": {
    params: z.object({ name: z.string().min(1), nameOnly: z.boolean().optional() }).strict(),
    result: z.object({
      dir: z.string(),
      base: z.string(),
      names: z.array(z.string()).optional(),
      /** base64: a binary patch need not be UTF-8. */
      patch: z.string().optional(),
    }),
    summary: "The guest workspace's changes past its base, as a base64 binary patch or names.",
  },
  "vm.session.start": {
    params: z
      .object({
        vm: z.string().min(1),
        name: z.string().min(1),
        command: z.array(z.string()).min(1),
        cwd: z.string().optional(),
      })
      .strict(),
    result: SessionInfo,
    summary: "Start a named process in the guest that outlives the SSH connection.",
  },
  "vm.session.list": {
    params: z.object({ vm: z.string().min(1) }).strict(),
    result: z.array(SessionInfo),
    summary: "Sessions in a VM with their state.",
  },
  "vm.session.show": {
    params: SessionParam,
    result: SessionInfo,
    summary: "One session: state, pid, exit code, start time, command, cwd.",
  },
  "vm.session.logs": {
    params: SessionParam.extend({ tailBytes: z.number().int().positive().optional() }).strict(),
    result: z.object({ name: z.string(), data: z.string(), bytes: z.number().int() }),
    summary: "A session's kept output (newest bytes, base64).",
  },
  "vm.session.send": {
    params: SessionParam.extend({ text: z.string() }).strict(),
    result: z.object({ name: z.string(), bytes: z.number().int() }),
    summary: "Write text to a session's stdin, exactly as given.",
  },
  "vm.session.stop": {
    params: SessionParam.extend({ timeoutMs: z.number().int().positive().optional() }).strict(),
    result: SessionInfo,
    summary: "SIGTERM a session's process group, SIGKILL after the timeout.",
  },
  "vm.session.kill": {
    params: SessionParam,
    result: SessionInfo,
    summary: "SIGKILL a session's process group.",
  },

  "image.list": { params: Empty, result: z.array(ImageInfo), summary: "Local images." },
  "image.show": { params: NameParam, result: ImageInfo, summary: "One image by name." },
  "image.build": {
    params: z
      .object({
        name: z.string().optional(),
        suite: z.string().optional(),
        packages: z.array(z.string()).optional(),
        sizeBytes: z.number().int().positive().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary: "Build the default Debian image locally with mmdebstrap.",
    progress: true,
  },
  "image.pull": {
    params: z
      .object({
        ref: z.string().min(1),
        name: z.string().optional(),
        kernelRef: z.string().optional(),
        sizeBytes: z.number().int().positive().optional(),
        insecureRegistry: z.boolean().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary: "Pull a catalog bundle or an OCI image into a bootable ext4.",
    progress: true,
  },
  "image.register": {
    params: z
      .object({
        name: z.string().min(1),
        rootfs: z.string().min(1),
        kernelRef: z.string().optional(),
        kernel: z.string().optional(),
        initrd: z.string().optional(),
        modules: z.string().optional(),
      })
      .strict(),
    result: ImageInfo,
    summary: "Register an existing rootfs.ext4 (unmanaged) with a kernel.",
  },
  "image.delete": {
    params: NameParam,
    result: z.object({ deleted: z.string() }),
    summary: "Remove an image not used by any VM.",
  },
  "image.promote": {
    params: NameParam,
    result: ImageInfo,
    summary: "Copy an unmanaged image into the managed store.",
  },
  "image.cache.prune": {
    params: z.object({ dryRun: z.boolean().optional() }).strict(),
    result: PruneResult,
    summary: "Empty the OCI blob cache.",
  },

  "kernel.list": { params: Empty, result: z.array(KernelInfo), summary: "Local kernels." },
  "kernel.catalog": {
    params: Empty,
    result: z.array(CatalogEntry),
    summary: "Catalog kernels and whether each is pulled.",
  },
  "kernel.pull": {
    params: z.object({ name: z.string().min(1), force: z.boolean().optional() }).strict(),
    result: KernelInfo,
    summary: "Fetch a catalog kernel, or derive debian-cloud locally.",
    progress: true,
  },
  "kernel.import": {
    params: z.object({ name: z.string().min(1), from: z.string().min(1) }).strict(),
    result: KernelInfo,
    summary: "Copy a kernel directory into the local store.",
  },
  "kernel.show": {
    params: NameParam,
    result: KernelDetail,
    summary: "One kernel by name, with its command line and files.",
  },
  "kernel.delete": {
    params: z.object({ name: z.string().min(1), force: z.boolean().optional() }).strict(),
    result: z.object({ deleted: z.string() }),
    summary: "Remove a kernel no image references.",
  },
} as const satisfies Record<string, MethodSpec>;

export type Methods = typeof methods;
export type MethodName = keyof Methods;
/** What a caller sends. */
export type ParamsOf<M extends MethodName> = z.input<Methods[M]["params"]>;
/** What a handler receives after validation. */
export type ParsedParamsOf<M extends MethodName> = z.output<Methods[M]["params"]>;
export type ResultOf<M extends MethodName> = z.output<Methods[M]["result"]>;

export const methodNames = Object.keys(methods) as MethodName[];

/** Notification the daemon sends while a long request runs; `token` ties it to the request. */
export const PROGRESS_NOTIFICATION = "progress";
export const ProgressReport = z.object({
  token: z.string(),
  stage: z.string(),
  message: z.string().optional(),
  current: z.number().optional(),
  total: z.number().optional(),
});
export type ProgressReport = z.infer<typeof ProgressReport>;

/** Requests may carry this key next to their params to ask for progress. */
export const PROGRESS_TOKEN_KEY = "$progressToken";

export type VmInfo = z.infer<typeof VmInfo>;
export type NetworkStatus = z.infer<typeof NetworkStatus>;
export type ImageInfo = z.infer<typeof ImageInfo>;
export type KernelInfo = z.infer<typeof KernelInfo>;
export type KernelDetail = z.infer<typeof KernelDetail>;
export type DaemonStatus = z.infer<typeof DaemonStatus>;
export type SessionInfo = z.infer<typeof SessionInfo>;
