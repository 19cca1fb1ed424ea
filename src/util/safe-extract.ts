import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import tar from "tar-stream";
import { BangerError, ErrorCode } from "../api/errors.js";

export interface ExtractOptions {
  /** Which members to keep, by normalised relative path; the rest are skipped. */
  keep(member: string): boolean;
}

export interface ExtractResult {
  files: string[];
}

function unsafe(member: string, why: string): BangerError {
  return new BangerError(
    ErrorCode.InvalidParams,
    `unsafe bundle member "${member}": ${why}`,
    "the bundle is corrupt or hostile; it was not installed",
  );
}

/** `./a//b/` → `a/b`; rejects absolute paths and any `..` segment. */
export function normaliseMember(name: string): string {
  if (name.startsWith("/")) throw unsafe(name, "absolute path");
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw unsafe(name, "path leaves the bundle ('..')");
  return parts.join("/");
}

/**
 * Where a relative link target lands, inside the bundle root, or null when it
 * escapes. Absolute targets are rooted in the bundle (they resolve inside the
 * guest), so they are always allowed.
 */
export function linkStaysInside(member: string, target: string): boolean {
  if (target.startsWith("/")) return true;
  const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(member), target));
  return resolved !== ".." && !resolved.startsWith("../");
}

/**
 * Extracts a tar stream into `dest` (which must exist and be empty), keeping
 * only the members `keep` accepts. Never writes outside `dest`: no absolute or
 * `..` paths, no escaping links, and no writing through a symlink an earlier
 * member created. Devices and fifos are skipped.
 */
export async function extractTarSafely(
  source: Readable,
  dest: string,
  opts: ExtractOptions,
): Promise<ExtractResult> {
  const extract = tar.extract();
  const files: string[] = [];
  const symlinks = new Set<string>();

  const assertNoSymlinkParent = (member: string) => {
    const parts = member.split("/");
    for (let i = 1; i < parts.length; i++) {
      if (symlinks.has(parts.slice(0, i).join("/")))
        throw unsafe(member, "a parent directory is a symlink");
    }
  };

  const consume = (async () => {
    for await (const entry of extract) {
      const header = entry.header;
      const member = normaliseMember(header.name);
      if (member === "" || !opts.keep(member)) {
        entry.resume();
        continue;
      }
      assertNoSymlinkParent(member);
      const target = path.join(dest, member);
      switch (header.type) {
        case "directory":
          await fsp.mkdir(target, { recursive: true, mode: 0o755 });
          entry.resume();
          break;
        case "file":
        case "contiguous-file":
        case undefined:
        case null:
          await fsp.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
          // wx: never follow or replace something already there.
          await pipeline(
            entry,
            fs.createWriteStream(target, { flags: "wx", mode: (header.mode ?? 0o644) & 0o777 }),
          );
          files.push(member);
          break;
        case "symlink": {
          const link = header.linkname ?? "";
          if (!linkStaysInside(member, link))
            throw unsafe(member, `symlink to "${link}" leaves the bundle`);
          await fsp.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
          await fsp.symlink(link, target);
          symlinks.add(member);
          entry.resume();
          break;
        }
        case "link": {
          const linked = normaliseMember(header.linkname ?? "");
          assertNoSymlinkParent(linked);
          await fsp.mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
          await fsp.link(path.join(dest, linked), target);
          files.push(member);
          entry.resume();
          break;
        }
        default:
          // Devices, fifos and the like have no place in a bundle.
          entry.resume();
      }
    }
  })();
  await Promise.all([pipeline(source, extract), consume]);
  return { files };
}
