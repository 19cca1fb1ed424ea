import { KernelService } from "../kernel/service.js";
import { createOciPuller } from "../image/oci/puller.js";
import { ImageService } from "../image/service.js";
import { hostResources } from "../config/vm-defaults.js";
import { createCommandRunner } from "../system/runner.js";
import { QemuDriver } from "../vmm/qemu/driver.js";
import { VmService } from "./vm-service.js";
import type { Handlers } from "./rpc-server.js";
import type { Daemon } from "./server.js";

/** Every RPC method's implementation. Later issues replace the pending ones with services. */
export function buildHandlers(daemon: Daemon): Handlers {
  const { store } = daemon;
  const env = daemon.deps.env ?? process.env;
  const runner = daemon.deps.runner ?? createCommandRunner(env);
  const kernels = new KernelService({ store, layout: daemon.layout, env, runner });
  const images = new ImageService({
    store,
    layout: daemon.layout,
    env,
    runner,
    kernels,
    oci: createOciPuller({ layout: daemon.layout, env }),
  });
  const vms = new VmService({
    store,
    layout: daemon.layout,
    runner,
    images,
    kernels,
    driver: daemon.deps.driver ?? new QemuDriver(runner),
    host: hostResources(),
    log: daemon.deps.log,
  });
  // VMs outlive the daemon: adopt the running ones before serving VM requests.
  const reconciled = vms
    .reconcile()
    .catch((err: unknown) => daemon.deps.log.error({ err }, "reconcile failed"));
  const afterReconcile = <T>(fn: () => Promise<T> | T) => reconciled.then(fn);
  return {
    "daemon.ping": async () => ({ pong: true, version: daemon.deps.version, pid: process.pid }),
    "daemon.status": async () => ({
      pid: process.pid,
      version: daemon.deps.version,
      startedAt: daemon.startedAt.toISOString(),
      uptimeMs: Date.now() - daemon.startedAt.getTime(),
      socket: daemon.layout.socketFile,
      stateDir: daemon.layout.stateDir,
      schemaVersion: store.schemaVersion(),
    }),
    "daemon.shutdown": async () => {
      daemon.requestShutdown();
      return { stopping: true };
    },

    "vm.list": () => afterReconcile(() => vms.list()),
    "vm.show": ({ name }) => afterReconcile(() => vms.show(name)),
    "vm.create": (p, ctx) => afterReconcile(() => vms.create(p, ctx.progress, ctx.signal)),
    "vm.start": ({ name }, ctx) => afterReconcile(() => vms.start(name, ctx.progress, ctx.signal)),
    "vm.stop": ({ name }) => afterReconcile(() => vms.stop(name)),
    "vm.restart": ({ name }, ctx) =>
      afterReconcile(() => vms.restart(name, ctx.progress, ctx.signal)),
    "vm.kill": ({ name }) => afterReconcile(() => vms.kill(name)),
    "vm.delete": ({ names }) => afterReconcile(() => vms.delete(names)),
    "vm.prune": () => afterReconcile(() => vms.prune()),
    "vm.stats": ({ name }) => afterReconcile(() => vms.stats(name)),
    "vm.ports": ({ name }) => afterReconcile(() => vms.ports(name)),
    "vm.set": ({ name, vcpu, memoryBytes }) =>
      afterReconcile(() => vms.set(name, { vcpu, memoryBytes })),
    "vm.health": ({ name }) => afterReconcile(() => vms.health(name)),
    "vm.logs": ({ name }) => afterReconcile(() => vms.logPath(name)),
    "vm.ssh": ({ name }) => afterReconcile(() => vms.sshTarget(name)),

    "image.list": async () => images.list(),
    "image.show": async ({ name }) => images.show(name),
    "image.build": async (p, ctx) => images.build(p, ctx.progress, ctx.signal),
    "image.pull": async (p, ctx) => images.pull(p, ctx.progress, ctx.signal),
    "image.register": async (p) => images.register(p),
    "image.delete": async ({ name }) => images.delete(name),
    "image.promote": async ({ name }) => images.promote(name),
    "image.cache.prune": async ({ dryRun }) => images.cachePrune(dryRun ?? false),

    "kernel.list": async () => kernels.list(),
    "kernel.catalog": async () => kernels.catalog(),
    "kernel.pull": async ({ name, force }, ctx) =>
      kernels.pull(name, { force: force ?? false, progress: ctx.progress, signal: ctx.signal }),
    "kernel.import": async ({ name, from }) => kernels.import(name, from),
    "kernel.show": async ({ name }) => kernels.show(name),
    "kernel.delete": async ({ name, force }) => kernels.delete(name, { force: force ?? false }),
  };
}
