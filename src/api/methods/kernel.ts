import { z } from "zod";
import { Empty, NameParam, type MethodSpec } from "./common.js";

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

export const kernelMethods = {
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

export type KernelInfo = z.infer<typeof KernelInfo>;
export type KernelDetail = z.infer<typeof KernelDetail>;
export type CatalogEntry = z.infer<typeof CatalogEntry>;
