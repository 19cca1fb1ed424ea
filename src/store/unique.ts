import { BangerError, ErrorCode } from "../api/errors.js";

/** Runs an insert; a taken name (or id) becomes AlreadyExists naming the kind and the name. */
export function insertUnique(kind: string, name: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY") {
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `a ${kind} named "${name}" already exists`,
        "pick another name or delete the existing one",
      );
    }
    throw err;
  }
}
