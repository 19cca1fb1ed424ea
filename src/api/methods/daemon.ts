import { z } from "zod";
import { Empty, type MethodSpec } from "./common.js";

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

export const daemonMethods = {
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
} as const satisfies Record<string, MethodSpec>;

export type NetworkStatus = z.infer<typeof NetworkStatus>;
export type DaemonStatus = z.infer<typeof DaemonStatus>;
