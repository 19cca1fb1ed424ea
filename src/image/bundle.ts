import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import type { Readable } from "node:stream";
import type { CommandRunner } from "../system/runner.js";
import { packBundle, type PackedBundle } from "../util/bundle-pack.js";
import { finaliseImage } from "./finalise.js";
import { checkImageName, type ImageManifest } from "./model.js";

export interface MakeBundleOptions {
  /** A `docker export`-style root filesystem tar (plain, gzip or zstd), or a stream of one. */
  rootfsTar: string | Readable;
  name: string;
  distro: string;
  arch: string;
  kernelRef: string;
  sizeBytes?: number | undefined;
  outDir: string;
  runner: CommandRunner;
  progress?: (stage: string, message?: string) => void;
}

/** `banger internal make-bundle`: rootfs tar → bootable rootfs.ext4 + manifest.json → content-addressed .tar.zst. */
export async function makeImageBundle(opts: MakeBundleOptions): Promise<PackedBundle> {
  checkImageName(opts.name);
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), "banger-bundle-"));
  try {
    let tarFile: string;
    if (typeof opts.rootfsTar === "string") {
      tarFile = path.resolve(opts.rootfsTar);
    } else {
      tarFile = path.join(work, "rootfs.tar");
      await pipeline(opts.rootfsTar, fs.createWriteStream(tarFile));
    }
    const staging = path.join(work, "staging");
    await fsp.mkdir(staging);
    const result = await finaliseImage({
      layers: [tarFile],
      stagingDir: staging,
      sizeBytes: opts.sizeBytes,
      runner: opts.runner,
      ...(opts.progress ? { progress: opts.progress } : {}),
    });
    const manifest: ImageManifest = {
      name: opts.name,
      kernel_ref: opts.kernelRef,
      distro: opts.distro,
      arch: opts.arch,
      size_bytes: result.sizeBytes,
      init: result.init,
    };
    const manifestFile = path.join(staging, "manifest.json");
    await fsp.writeFile(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
    opts.progress?.("pack", "zstd");
    return await packBundle(
      [
        { name: "rootfs.ext4", from: result.rootfs },
        { name: "manifest.json", from: manifestFile },
      ],
      opts.outDir,
      (sha) => `${opts.name}-${sha.slice(0, 12)}-${opts.arch}.tar.zst`,
    );
  } finally {
    await fsp.rm(work, { recursive: true, force: true });
  }
}
