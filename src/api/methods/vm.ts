import { z } from "zod";
import { Empty, NameParam, type MethodSpec } from "./common.js";

export const Provenance = z.enum(["config", "auto", "builtin"]);

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
  /** The snapshot a clone was made from (its disks sit on it); null for a VM booted from its image. */
  snapshot: z.string().nullable().optional(),
  /** `vm show`: how the VM is (running) or will be (else) networked, and a bridge set-up failure. */
  network: z
    .object({
      mode: z.enum(["bridge", "user"]),
      problem: z.string().nullable(),
      hint: z.string().nullable(),
    })
    .optional(),
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
    /** Boot from the image even when a boot snapshot of this shape exists (src/snapshot/warm.ts), and save none. */
    cold: z.boolean().optional(),
    /** Clone this snapshot (src/snapshot/clone.ts): image, kernel and sizes are the snapshot's. */
    fromSnapshot: z.string().min(1).optional(),
  })
  .strict();

const NamesParam = z.object({ names: z.array(z.string().min(1)).min(1) }).strict();

/** A VM's lifecycle and what can be asked about it; its workspace and sessions have their own files. */
export const vmMethods = {
  "vm.list": { params: Empty, result: z.array(VmInfo), summary: "All VMs with their state." },
  "vm.show": { params: NameParam, result: VmInfo, summary: "One VM by name." },
  "vm.create": {
    params: VmCreateParams,
    result: VmInfo.extend({ warnings: z.array(z.string()), restored: z.boolean().optional() }),
    summary:
      "Create (and by default start) a VM, restored from its shape's boot snapshot when there is one (`restored`); `warnings` lists skipped file_sync entries and a restore that fell back to a cold boot.",
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
    summary: "Kill VMs and remove their disks.",
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
} as const satisfies Record<string, MethodSpec>;

export type VmInfo = z.infer<typeof VmInfo>;
