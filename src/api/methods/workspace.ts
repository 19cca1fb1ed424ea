import { z } from "zod";
import type { MethodSpec } from "./common.js";

export const workspaceMethods = {
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
      /** null: the guest has no git, so no base was recorded and export will say it needs git. */
      base: z.string().nullable(),
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
} as const satisfies Record<string, MethodSpec>;
