import { createOciPuller } from "../../src/image/oci/puller.js";
import { ImageService, type OciPuller } from "../../src/image/service.js";
import { KernelService } from "../../src/kernel/service.js";
import type { Layout } from "../../src/paths/layout.js";
import type { Store } from "../../src/store/store.js";
import { VmService, type VmServiceDeps } from "../../src/vm/service.js";
import type { Driver } from "../../src/vmm/driver.js";
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

/**
 * A VmService over one store and layout with a test's QEMU driver (its kernel and image
 * services as the daemon wires them) on a 2-CPU, 4 GiB host; `extra` sets the rest.
 */
export function testVmService(
  store: Store,
  layout: Layout,
  driver: Driver,
  runner: CommandRunner,
  extra: Partial<VmServiceDeps> = {},
): VmService {
  const { kernels, images } = imageServices(store, layout, { runner });
  return new VmService({
    store,
    layout,
    runner,
    images,
    kernels,
    drivers: { qemu: driver },
    pickVmm: async () => "qemu",
    host: { cpus: 2, memoryBytes: 4 * 2 ** 30 },
    ...extra,
  });
}
