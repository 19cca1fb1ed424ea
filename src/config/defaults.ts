// banger's built-in names and network, imported by every layer that needs one (config, image,
// kernel, net, system, cli) and never retyped. Nothing here imports anything.

/** The image a VM boots when none is named: built locally by mmdebstrap. */
export const DEFAULT_IMAGE_NAME = "debian-bookworm";
/** The kernel banger derives locally from the host distribution; needs no catalog. */
export const DISTRO_KERNEL_NAME = "debian-cloud";
/** The `[network]` defaults, which are also banger-helper's default pin. */
export const DEFAULT_BRIDGE = "banger0";
export const DEFAULT_SUBNET = "172.30.0.0/24";

/** Where everything banger injects into an image lives (relative to its root): the guest toolkit. */
export const TOOLKIT_DIR = "usr/lib/banger";
