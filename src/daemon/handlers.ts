// The method table: every RPC method mapped onto the services wiring.ts builds.
import type { NetworkStatus, VmInfo } from "../api/methods.js";
import { USER_NET } from "../net/user-nat.js";
import type { Handlers } from "./rpc-server.js";
import type { Daemon } from "./server.js";
import type { SessionService } from "./session-service.js";
import type { SnapshotService } from "../snapshot/service.js";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmService } from "../vm/service.js";
import { wireServices, type Services } from "./wiring.js";
import type { WorkspaceService } from "./workspace-service.js";

/** Every RPC method's implementation. */
export function buildHandlers(daemon: Daemon, services: Services = wireServices(daemon)): Handlers {
  const { store } = daemon;
  const { images, kernels } = services;
  const afterSweep = <T>(fn: () => Promise<T> | T) => services.swept.then(fn);
  const withVms = <T>(fn: (vms: VmService) => Promise<T> | T) => services.vms.then(fn);
  /** `vm show`: how the VM is networked (its address says, when running) and why not bridged. */
  const withNetwork = (info: VmInfo): VmInfo => {
    const networkStatus = services.networkStatus();
    const running = info.state === "running" && info.ip !== null;
    const mode = running ? (info.ip === USER_NET.ip ? "user" : "bridge") : networkStatus.mode;
    const failed = mode === "user" && networkStatus.problem !== null;
    return {
      ...info,
      network: {
        mode,
        problem: failed ? networkStatus.problem : null,
        hint: failed ? networkStatus.hint : null,
      },
    };
  };
  const withWorkspaces = <T>(fn: (w: WorkspaceService) => Promise<T>) =>
    services.workspaces.then(fn);
  const withSessions = <T>(fn: (s: SessionService) => Promise<T>) => services.sessions.then(fn);
  const withSnapshots = <T>(fn: (s: SnapshotService) => Promise<T> | T) =>
    services.snapshots.then(fn);
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
      // Known once start-up is done; a start-up still busy after 10 s says "starting".
      network: await Promise.race([
        services.vms.then(
          () => services.networkStatus(),
          () => services.networkStatus(),
        ),
        new Promise<NetworkStatus>((r) =>
          setTimeout(() => r(services.networkStatus()), 10_000).unref(),
        ),
      ]),
    }),
    "daemon.shutdown": async () => {
      daemon.requestShutdown();
      return { stopping: true };
    },

    "vm.list": () => withVms((vms) => vms.list()),
    "vm.show": ({ name }) => withVms(async (vms) => withNetwork(await vms.show(name))),
    "vm.create": async ({ fromSnapshot, ...p }, ctx) => {
      if (fromSnapshot === undefined)
        return withSnapshots((s) => s.create(p, ctx.progress, ctx.signal));
      const taken = (
        ["image", "kernelRef", "vcpu", "memoryBytes", "diskBytes", "cold"] as const
      ).filter((k) => p[k] !== undefined);
      if (taken.length > 0)
        throw new BangerError(
          ErrorCode.InvalidParams,
          `fromSnapshot cannot be given with ${taken.join(", ")}`,
          "a clone has the snapshot's image, kernel and sizes: leave those out",
        );
      return withSnapshots((s) =>
        s.clone(
          { snapshot: fromSnapshot, name: p.name, nat: p.nat, start: p.start },
          ctx.progress,
          ctx.signal,
        ),
      );
    },
    "vm.start": ({ name }, ctx) => withVms((vms) => vms.start(name, ctx.progress, ctx.signal)),
    "vm.stop": ({ name }) => withVms((vms) => vms.stop(name)),
    "vm.restart": ({ name }, ctx) => withVms((vms) => vms.restart(name, ctx.progress, ctx.signal)),
    "vm.kill": ({ name }) => withVms((vms) => vms.kill(name)),
    "vm.delete": ({ names }) => withVms((vms) => vms.delete(names)),
    "vm.prune": () => withVms((vms) => vms.prune()),
    "vm.stats": ({ name }) => withVms((vms) => vms.stats(name)),
    "vm.ports": ({ name }) => withVms((vms) => vms.ports(name)),
    "vm.set": ({ name, vcpu, memoryBytes }) =>
      withVms((vms) => vms.set(name, { vcpu, memoryBytes })),
    "vm.health": ({ name }) => withVms((vms) => vms.health(name)),
    "vm.logs": ({ name }) => withVms((vms) => vms.logPath(name)),
    "vm.ssh": ({ name }) => withVms((vms) => vms.sshTarget(name)),
    "vm.workspace.prepare": (p, ctx) =>
      withWorkspaces((w) => w.prepare(p, ctx.progress, ctx.signal)),
    "vm.workspace.export": ({ name, nameOnly }, ctx) =>
      withWorkspaces((w) => w.export(name, { nameOnly }, ctx.signal)),
    "vm.snapshot": ({ name, snapshot, stop }, ctx) =>
      withSnapshots((s) => s.take(name, { name: snapshot, stop }, ctx.progress)),
    "vm.fork": ({ name, clone, nat }, ctx) =>
      withSnapshots((s) => s.fork(name, { clone, nat }, ctx.progress, ctx.signal)),
    "snapshot.list": () => withSnapshots((s) => s.list()),
    "snapshot.show": ({ name }) => withSnapshots((s) => s.show(name)),
    "snapshot.delete": ({ name }) => withSnapshots((s) => s.delete(name)),
    "snapshot.prune": ({ dryRun }) => withSnapshots((s) => s.prune(dryRun ?? false)),
    "vm.session.start": ({ vm, name, command, cwd }) =>
      withSessions((s) => s.start(vm, name, command, cwd)),
    "vm.session.list": ({ vm }) => withSessions((s) => s.list(vm)),
    "vm.session.show": ({ vm, name }) => withSessions((s) => s.show(vm, name)),
    "vm.session.logs": ({ vm, name, tailBytes }) =>
      withSessions((s) => s.logs(vm, name, tailBytes)),
    "vm.session.send": ({ vm, name, text }) => withSessions((s) => s.send(vm, name, text)),
    "vm.session.stop": ({ vm, name, timeoutMs }) =>
      withSessions((s) => s.stop(vm, name, timeoutMs)),
    "vm.session.kill": ({ vm, name }) => withSessions((s) => s.kill(vm, name)),

    "image.list": () => afterSweep(() => images.list()),
    "image.show": ({ name }) => afterSweep(() => images.show(name)),
    "image.build": (p, ctx) => afterSweep(() => images.build(p, ctx.progress, ctx.signal)),
    "image.build.dockerfile": (p, ctx) =>
      afterSweep(() => images.buildDockerfile(p, ctx.progress, ctx.signal)),
    "image.pull": (p, ctx) => afterSweep(() => images.pull(p, ctx.progress, ctx.signal)),
    "image.import": (p, ctx) => afterSweep(() => images.import(p, ctx.progress, ctx.signal)),
    "image.register": (p) => afterSweep(() => images.register(p)),
    "image.delete": ({ name }) => afterSweep(() => images.delete(name)),
    "image.promote": ({ name }) => afterSweep(() => images.promote(name)),
    "image.cache.prune": ({ dryRun }) => afterSweep(() => images.cachePrune(dryRun ?? false)),

    "kernel.list": () => afterSweep(() => kernels.list()),
    "kernel.catalog": () => afterSweep(() => kernels.catalog()),
    "kernel.pull": ({ name, force }, ctx) =>
      afterSweep(() =>
        kernels.pull(name, { force: force ?? false, progress: ctx.progress, signal: ctx.signal }),
      ),
    "kernel.import": ({ name, from }) => afterSweep(() => kernels.import(name, from)),
    "kernel.show": ({ name }) => afterSweep(() => kernels.show(name)),
    "kernel.delete": ({ name, force }) =>
      afterSweep(() => kernels.delete(name, { force: force ?? false })),
  };
}
