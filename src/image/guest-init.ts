import path from "node:path";
import { TOOLKIT_DIR } from "../config/defaults.js";
import { resolveInTree } from "./guest-tree.js";

/** The image's own init, when it is systemd: banger's units are enabled in it. */
export const IMAGE_INIT = "/sbin/init";
/** banger's init (guest-scripts/init.sh): for images without one, and for non-systemd inits, which it hands PID 1 to. */
export const BANGER_INIT = `/${TOOLKIT_DIR}/init`;

/**
 * The init an image boots with, decided once when it is finalised and recorded on the image:
 * its /sbin/init when that is systemd (which starts banger's network, first-boot and SSH units),
 * else banger's init, which does their work itself and then hands PID 1 to the image's own
 * /sbin/init if it has one (busybox init, OpenRC, sysvinit start nothing of banger's).
 */
export async function pickInit(tree: string): Promise<string> {
  const init = await resolveInTree(tree, IMAGE_INIT);
  const isSystemd = init?.stat.isFile() === true && path.posix.basename(init.rel) === "systemd";
  return isSystemd ? IMAGE_INIT : BANGER_INIT;
}

/** The kernel argument that makes banger's initramfs switch to `init`; none for /sbin/init, its default. */
export function initKernelArgs(init: string | null): string[] {
  return init && init !== IMAGE_INIT ? [`banger.init=${init}`] : [];
}
