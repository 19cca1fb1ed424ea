import { z } from "zod";
import type { MethodSpec } from "./methods/common.js";
import { daemonMethods } from "./methods/daemon.js";
import { imageMethods } from "./methods/image.js";
import { kernelMethods } from "./methods/kernel.js";
import { sessionMethods } from "./methods/session.js";
import { snapshotMethods } from "./methods/snapshot.js";
import { vmMethods } from "./methods/vm.js";
import { workspaceMethods } from "./methods/workspace.js";

/**
 * The one table of RPC methods: name → param/result schemas and a summary, one file per group
 * under methods/. The daemon registers exactly these; docs/internals/rpc.md lists exactly these
 * (a test checks).
 */
export const methods = {
  ...daemonMethods,
  ...vmMethods,
  ...workspaceMethods,
  ...sessionMethods,
  ...snapshotMethods,
  ...imageMethods,
  ...kernelMethods,
} as const satisfies Record<string, MethodSpec>;

export type Methods = typeof methods;
export type MethodName = keyof Methods;
/** What a caller sends. */
export type ParamsOf<M extends MethodName> = z.input<Methods[M]["params"]>;
/** What a handler receives after validation. */
export type ParsedParamsOf<M extends MethodName> = z.output<Methods[M]["params"]>;
export type ResultOf<M extends MethodName> = z.output<Methods[M]["result"]>;

export const methodNames = Object.keys(methods) as MethodName[];

export { PROGRESS_NOTIFICATION, PROGRESS_TOKEN_KEY } from "./progress.js";
export const ProgressReport = z.object({
  token: z.string(),
  stage: z.string(),
  message: z.string().optional(),
  current: z.number().optional(),
  total: z.number().optional(),
});
export type ProgressReport = z.infer<typeof ProgressReport>;

export { DaemonStatus, NetworkStatus } from "./methods/daemon.js";
export { ImageConfig, ImageInfo } from "./methods/image.js";
export { CatalogEntry, KernelDetail, KernelInfo } from "./methods/kernel.js";
export { SessionInfo } from "./methods/session.js";
export { SnapshotInfo } from "./methods/snapshot.js";
export { Provenance, VmInfo } from "./methods/vm.js";
