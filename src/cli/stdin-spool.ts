import fs from "node:fs";
import fsp from "node:fs/promises";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { BangerError, ErrorCode } from "../api/errors.js";
import { spoolPath, sweepImportSpools } from "../image/import-spool.js";

/**
 * An archive piped into the CLI is saved whole under `<state>/imports/` before the daemon reads
 * it (the daemon takes paths, not streams): read to its end, so a stream cut short reaches the
 * daemon as a truncated archive, which it refuses. The file is removed afterwards, also on
 * Ctrl-C; what a CLI killed outright left is swept (src/image/import-spool.ts), here first.
 */
export async function withStdinSpool<T>(
  importsDir: string,
  stdin: Readable & { isTTY?: boolean },
  fn: (file: string) => Promise<T>,
): Promise<T> {
  if (stdin.isTTY)
    throw new BangerError(
      ErrorCode.InvalidParams,
      "'-' reads the archive from stdin, which is a terminal",
      "pipe one in, e.g. 'podman save app | banger image import - --name app'",
    );
  await fsp.mkdir(importsDir, { recursive: true, mode: 0o700 });
  await sweepImportSpools(importsDir);
  const file = await spoolPath(importsDir);
  const onSignal = (signal: NodeJS.Signals) => {
    fs.rmSync(file, { force: true });
    process.exit(signal === "SIGINT" ? 130 : 143);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    await pipeline(stdin, fs.createWriteStream(file, { flags: "wx", mode: 0o600 })).catch(
      (err: Error) => {
        throw new BangerError(
          ErrorCode.InvalidParams,
          `cannot read the archive from stdin: ${err.message}; nothing was imported`,
        );
      },
    );
    return await fn(file);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await fsp.rm(file, { force: true });
  }
}
