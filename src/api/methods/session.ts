import { z } from "zod";
import type { MethodSpec } from "./common.js";

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

export const sessionMethods = {
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
} as const satisfies Record<string, MethodSpec>;

export type SessionInfo = z.infer<typeof SessionInfo>;
