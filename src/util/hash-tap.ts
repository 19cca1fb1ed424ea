import { createHash } from "node:crypto";
import { Transform } from "node:stream";

/** A pass-through stream that hashes (sha256) and counts what flows through it. */
export function hashingTap(onBytes?: (total: number) => void): {
  stream: Transform;
  digest(): string;
  bytes(): number;
} {
  const hash = createHash("sha256");
  let total = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      total += chunk.length;
      onBytes?.(total);
      done(null, chunk);
    },
  });
  return { stream, digest: () => hash.digest("hex"), bytes: () => total };
}
