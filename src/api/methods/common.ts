import { z } from "zod";

/** What every entry of the method table holds. */
export interface MethodSpec {
  params: z.ZodType;
  result: z.ZodType;
  summary: string;
  /** Long-running: the daemon streams `progress` notifications for it. */
  progress?: boolean;
}

export const Empty = z.object({}).strict();
export const NameParam = z.object({ name: z.string().min(1) }).strict();
