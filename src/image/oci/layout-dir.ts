import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import { BangerError, ErrorCode } from "../../api/errors.js";
import { describeKind } from "../../util/regular-file.js";
import { ensureFreeSpace, formatBytes, limitError, type ImageLimits } from "../limits.js";
import { copyCounted, memberName, type Member, type MemberSource } from "./archive-members.js";

/**
 * An OCI layout directory (`skopeo copy ... oci:<dir>`) as a MemberSource: a file is read only
 * when the manifests name it, each parent lstat'ed as a real directory and the file itself
 * opened O_NOFOLLOW (a symlinked blob is refused, never followed), then copied into `spool` so
 * what is verified is what is unpacked.
 */
export function layoutDirectory(
  root: string,
  spool: string,
  limits: ImageLimits,
  what: string,
): MemberSource {
  const copies = new Map<string, Member | null>();
  let count = 0;
  const refuse = (why: string) =>
    new BangerError(ErrorCode.InvalidParams, `${what}: ${why}; nothing was imported`);

  async function copy(name: string): Promise<Member | null> {
    const parts = name.split("/");
    let dir = root;
    for (const part of parts.slice(0, -1)) {
      dir = path.join(dir, part);
      const stat = await fsp.lstat(dir).catch(() => null);
      if (!stat) return null;
      if (!stat.isDirectory())
        throw refuse(`${path.relative(root, dir)} is ${describeKind(stat)}, not a directory`);
    }
    const file = path.join(dir, parts.at(-1)!);
    const flags = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK | fs.constants.O_NOFOLLOW;
    const handle = await fsp.open(file, flags).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return null;
      if (err.code === "ELOOP") throw refuse(`${name} is a symbolic link (banger follows none)`);
      throw refuse(`cannot read ${name}: ${err.code ?? err.message}`);
    });
    if (!handle) return null;
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) throw refuse(`${name} is ${describeKind(stat)}, not a regular file`);
      if (stat.size > limits.maxLayerBytes)
        throw limitError(
          `${what}: ${name} is ${formatBytes(stat.size)}, more than a layer may have`,
          "max_layer_size",
        );
      await fsp.mkdir(spool, { recursive: true });
      await ensureFreeSpace(spool, stat.size, `reading ${what}`);
      const dest = path.join(spool, `member-${++count}`);
      const copied = await copyCounted(
        handle.createReadStream({ autoClose: false, start: 0 }),
        dest,
        stat.size,
        () => refuse(`${name} grew while banger read it`),
      );
      return { file: dest, ...copied };
    } finally {
      await handle.close();
    }
  }

  return {
    what,
    async get(raw) {
      const name = memberName(raw, what);
      if (!copies.has(name)) copies.set(name, await copy(name));
      return copies.get(name) ?? null;
    },
  };
}
