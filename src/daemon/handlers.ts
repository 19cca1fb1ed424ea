import { BangerError, ErrorCode, notImplemented } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { KernelService } from "../kernel/service.js";
import { createOciPuller } from "../image/oci/puller.js";
import { ImageService } from "../image/service.js";
import type { VmRow } from "../store/store.js";
import { createCommandRunner } from "../system/runner.js";
import type { Handlers } from "./rpc-server.js";
import type { Daemon } from "./server.js";

const VM_WORK = "the VM lifecycle work (issue #5)";

function pending(what: string, arrivesWith: string): () => Promise<never> {
  return async () => {
    throw notImplemented(what, arrivesWith);
  };
}

function notFound(kind: string, name: string, listCommand: string): BangerError {
  return new BangerError(
    ErrorCode.NotFound,
    `no ${kind} named "${name}"`,
    `'${listCommand}' shows what exists`,
  );
}

export function vmInfo(row: VmRow): VmInfo {
  return {
    id: row.id,
    name: row.name,
    state: row.state,
    image: row.imageId,
    kernel: row.kernelRef,
    vcpu: row.vcpu,
    memoryBytes: row.memoryBytes,
    diskBytes: row.diskBytes,
    ip: row.ip,
    vmm: row.vmm,
    createdAt: row.createdAt,
  };
}

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

    "vm.list": async () => store.listVms().map(vmInfo),
    "vm.show": async ({ name }) => {
      const row = store.getVmByName(name);
      if (!row) throw notFound("VM", name, "banger vm list");
      return vmInfo(row);
    },
    "vm.create": pending("vm.create", VM_WORK),
    "vm.start": pending("vm.start", VM_WORK),
    "vm.stop": pending("vm.stop", VM_WORK),
    "vm.restart": pending("vm.restart", VM_WORK),
    "vm.kill": pending("vm.kill", VM_WORK),
    "vm.delete": pending("vm.delete", VM_WORK),
    "vm.prune": pending("vm.prune", VM_WORK),
    "vm.stats": pending("vm.stats", VM_WORK),
    "vm.ports": pending("vm.ports", VM_WORK),
    "vm.set": pending("vm.set", VM_WORK),
    "vm.health": pending("vm.health", VM_WORK),
    "vm.logs": pending("vm.logs", VM_WORK),
    "vm.ssh": pending("vm.ssh", VM_WORK),

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
