import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";

export function layerError(member: string, why: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `image layer member "${member}": ${why}`,
    "the image is malformed or hostile; nothing was installed",
  );
}

/**
 * Names debugfs cannot take safely in a quoted script argument: control
 * characters (newline included) and double quotes. Backslashes and single
 * quotes are fine (debugfs takes them literally) and real images need them:
 * systemd unit names such as system-systemd\x2dcryptsetup.slice.
 */
// eslint-disable-next-line no-control-regex
export const HOSTILE_NAME = /[\u0000-\u001f\u007f"]/;

/** `./usr//bin/` → `usr/bin`; rejects absolute paths, `..` and debugfs-hostile names. */
export function normaliseLayerPath(name: string): string {
  if (HOSTILE_NAME.test(name)) {
    throw layerError(
      JSON.stringify(name).slice(1, -1),
      "the name has a control character or a double quote, which cannot be written to ext4 safely",
    );
  }
  if (name.startsWith("/")) throw layerError(name, "absolute path");
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw layerError(name, "path leaves the image ('..')");
  // Linux's NAME_MAX and PATH_MAX: longer names cannot be written (ENAMETOOLONG otherwise).
  if (parts.some((p) => Buffer.byteLength(p) > 255) || Buffer.byteLength(name) > 4000)
    throw layerError(
      name.slice(0, 80) + "...",
      "a name is longer than Linux allows (255 bytes a component)",
    );
  return parts.join("/");
}

/** Does a relative link target stay inside the tree when resolved from `member`'s directory? */
export function relativeStaysInside(member: string, target: string): boolean {
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(member), target));
  return resolved !== ".." && !resolved.startsWith("../");
}
