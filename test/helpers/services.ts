import { createOciPuller } from "../../src/image/oci/puller.js";
import { ImageService, type OciPuller } from "../../src/image/service.js";
import { KernelService } from "../../src/kernel/service.js";
import type { Layout } from "../../src/paths/layout.js";
import type { Store } from "../../src/store/store.js";
import { createCommandRunner, type CommandRunner } from "../../src/system/runner.js";

/** An OCI side for tests that never pull from a registry. */
export const noOci: OciPuller = {
  defaultName: () => "unused",
  fetchLayers: async () => {
    throw new Error("no OCI pull expected here");
  },
};

/** Kernel and image services over one store and layout, as the daemon wires them; `oci` defaults to the real puller. */
export function imageServices(
  store: Store,
  layout: Layout,
  opts: { env?: NodeJS.ProcessEnv; oci?: OciPuller; runner?: CommandRunner } = {},
): { kernels: KernelService; images: ImageService } {
  const env = opts.env ?? {};
  const runner = opts.runner ?? createCommandRunner();
  const kernels = new KernelService({ store, layout, env, runner });
  const oci = opts.oci ?? createOciPuller({ layout, env });
  return { kernels, images: new ImageService({ store, layout, env, runner, kernels, oci }) };
}
