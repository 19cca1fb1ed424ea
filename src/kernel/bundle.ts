import path from "node:path";
import { packBundle, type PackedBundle, type PackMember } from "../util/bundle-pack.js";
import { checkKernelName, discoverKernel, KERNEL_FILES } from "./kernel-dir.js";

/** The members a kernel bundle may hold; fetch keeps exactly these. */
export function isKernelBundleMember(member: string): boolean {
  return (
    member === KERNEL_FILES.vmlinux ||
    member === KERNEL_FILES.vmlinuz ||
    member === KERNEL_FILES.initrd ||
    member === KERNEL_FILES.modules ||
    member.startsWith(`${KERNEL_FILES.modules}/`)
  );
}

/** `banger internal make-kernel-bundle`: a local kernel dir → `<name>-<sha256 prefix>-<arch>.tar.zst`. */
export async function makeKernelBundle(
  dir: string,
  outDir: string,
  opts: { name?: string; arch?: string } = {},
): Promise<PackedBundle & { name: string }> {
  const found = await discoverKernel(dir);
  const name = opts.name ?? path.basename(path.resolve(dir));
  checkKernelName(name);
  const arch = opts.arch ?? "x86_64";
  const members: PackMember[] = [];
  if (found.vmlinux) members.push({ name: KERNEL_FILES.vmlinux, from: found.vmlinux });
  if (found.vmlinuz) members.push({ name: KERNEL_FILES.vmlinuz, from: found.vmlinuz });
  if (found.initrd) members.push({ name: KERNEL_FILES.initrd, from: found.initrd });
  if (found.modules) members.push({ name: KERNEL_FILES.modules, from: found.modules });
  const packed = await packBundle(
    members,
    outDir,
    (sha) => `${name}-${sha.slice(0, 12)}-${arch}.tar.zst`,
  );
  return { ...packed, name };
}
