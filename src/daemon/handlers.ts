import { KernelService } from "../kernel/service.js";
import { createOciPuller } from "../image/oci/puller.js";
import { ImageService } from "../image/service.js";
import { loadConfig } from "../config/config.js";
import { hostResources } from "../config/vm-defaults.js";
import { BridgeNetwork } from "../net/network.js";
import { pinnedNetwork, privilegedOpsFor, probePrivileged } from "../net/privileged-mode.js";
import { canOpenReadWrite, detectAccel, realAccelDeps, resolveAccel } from "../system/accel.js";
import { FirecrackerDriver } from "../vmm/firecracker/driver.js";
import { selectVmm } from "../vmm/select.js";
import { createCommandRunner } from "../system/runner.js";
import { QemuDriver } from "../vmm/qemu/driver.js";
import { loadGuestScripts } from "../guest/scripts.js";
import { SessionService } from "./session-service.js";
import { VmService } from "../vm/service.js";
import { WorkspaceService } from "./workspace-service.js";
import type { Handlers } from "./rpc-server.js";
import type { Daemon } from "./server.js";
import { ConsoleRecorders } from "../vmm/console-log.js";
import { sweepOrphans } from "./sweep.js";
import fsp from "node:fs/promises";
import { BangerError } from "../api/errors.js";
import type { NetworkStatus, VmInfo } from "../api/methods.js";
import { USER_NET } from "../net/user-nat.js";

/** Every RPC method's implementation. Later issues replace the pending ones with services. */
export function buildHandlers(daemon: Daemon): Handlers {
  const { store } = daemon;
  const env = daemon.deps.env ?? process.env;
  const runner = daemon.deps.runner ?? createCommandRunner(env);
  // Read once, here: an install without guest-scripts/ fails the start, saying which file.
  const scripts = loadGuestScripts();
  const kernels = new KernelService({ store, layout: daemon.layout, env, runner });
  const images = new ImageService({
    store,
    layout: daemon.layout,
    env,
    runner,
    kernels,
    oci: createOciPuller({ layout: daemon.layout, env }),
  });
  // Before any request is served: what a daemon killed mid-create or mid-build left behind, and
  // no row owns, goes (image and kernel requests wait for it too: their staging must not be swept).
  const swept = sweepOrphans({ store, layout: daemon.layout, log: daemon.deps.log }).then(
    () => undefined,
    (err: unknown) => daemon.deps.log.error({ err }, "start-up sweep failed"),
  );
  const afterSweep = <T>(fn: () => Promise<T> | T) => swept.then(fn);
  let networkStatus: NetworkStatus = {
    mode: "user",
    reason: "starting",
    bridge: null,
    problem: null,
    hint: null,
  };
  // Bridge networking when someone may create taps for us (we are root, or banger-helper
  // answers) and /dev/net/tun opens; else rootless user-mode networking, with the reason logged.
  const ready = (async () => {
    await swept;
    const log = daemon.deps.log;
    let network: BridgeNetwork | null = null;
    const uid = process.getuid?.() ?? 0;
    const userMode = (reason: string, problem: string | null = null, hint: string | null = null) =>
      (networkStatus = { mode: "user", reason, bridge: null, problem, hint });
    if (env.BANGER_NETWORK === "user") {
      log.info({}, "BANGER_NETWORK=user: using user-mode networking");
      userMode("BANGER_NETWORK=user");
    } else if (!(await canOpenReadWrite("/dev/net/tun"))) {
      log.info({ uid }, "/dev/net/tun does not open for this user: using user-mode networking");
      userMode("/dev/net/tun does not open for this user");
    } else {
      try {
        const config = await loadConfig(daemon.layout.configFile);
        const probe = await probePrivileged({
          env,
          uid,
          configuredSocket: config.network.helperSocket,
          network: config.network,
        });
        // The helper's pinned bridge and subnet (or, as root, the config's, pinned here).
        const pinned = pinnedNetwork(probe, config.network);
        const ops = await privilegedOpsFor(probe, runner, pinned, uid);
        if (!ops) {
          const reason = probe.mode === "none" ? probe.reason : "";
          log.info({ reason }, "nobody to run privileged steps: using user-mode networking");
          // No helper installed is plain rootless mode; a helper that is there (or was asked
          // for) and cannot be used is a failure the user must see.
          const socket = probe.mode === "none" ? probe.socket : null;
          const wanted =
            socket === null ||
            config.network.helperSocket !== null ||
            Boolean(env.BANGER_HELPER_SOCKET) ||
            Boolean(env.BANGER_PRIVILEGED) ||
            (await fsp.lstat(socket).then(
              () => true,
              () => false,
            ));
          if (wanted)
            userMode(
              "bridge networking failed",
              `bridge networking is not available: ${reason}`,
              "'banger doctor' checks the helper; fix it, then 'banger daemon stop' so the next start tries again (see docs/helper.md)",
            );
          else userMode(`no banger-helper (${reason})`);
        } else {
          log.info(
            probe,
            "bridge networking: privileged steps " +
              (probe.mode === "root" ? "in-process (root)" : "through banger-helper"),
          );
          // A set-up that fails has started nothing of ours (the bridge it may have met is not
          // known to be ours alone): nothing to undo.
          const bridge = new BridgeNetwork(ops, pinned, store, uid, log);
          await bridge.setUp();
          network = bridge;
          daemon.addCloser(() => bridge.tearDown());
          networkStatus = {
            mode: "bridge",
            reason: probe.mode === "root" ? "running as root" : "through banger-helper",
            bridge: pinned.bridge,
            problem: null,
            hint: null,
          };
        }
      } catch (err) {
        log.error({ err }, "bridge networking unavailable: using user-mode networking");
        network = null;
        const hint = err instanceof BangerError ? err.hint : undefined;
        userMode(
          "bridge networking failed",
          `bridge set-up failed: ${err instanceof Error ? err.message : String(err)}`,
          `${hint ? `${hint}; then ` : "fix [network] in config.toml (bridge, subnet, dns_port), then "}'banger daemon stop' so the next start tries again; until then VMs use user-mode networking`,
        );
      }
    }
    // The daemon reads every QEMU console into a bounded log; VMs keep running without it.
    const consoles = new ConsoleRecorders(daemon.deps.log);
    daemon.addCloser(async () => consoles.closeAll());
    const vms = new VmService({
      store,
      layout: daemon.layout,
      runner,
      images,
      kernels,
      drivers: {
        qemu: daemon.deps.driver ?? new QemuDriver(runner, consoles),
        firecracker: new FirecrackerDriver(runner),
      },
      pickVmm: async () => {
        const config = await loadConfig(daemon.layout.configFile);
        const accel = resolveAccel(config.accel, await detectAccel(realAccelDeps()));
        return selectVmm(
          config.vmm,
          accel,
          (await runner.which("firecracker")) !== null,
          network !== null,
        );
      },
      network,
      host: hostResources(),
      log: daemon.deps.log,
    });
    // VMs outlive the daemon: adopt the running ones before serving VM requests.
    await vms
      .reconcile()
      .catch((err: unknown) => daemon.deps.log.error({ err }, "reconcile failed"));
    // Adopted VMs keep their taps; whatever else an earlier daemon left on the bridge is reused or removed.
    await network
      ?.startPool()
      .catch((err: unknown) => daemon.deps.log.error({ err }, "tap pool start-up failed"));
    return vms;
  })();
  const withVms = <T>(fn: (vms: VmService) => Promise<T> | T) => ready.then(fn);
  /** `vm show`: how the VM is networked (its address says, when running) and why not bridged. */
  const withNetwork = (info: VmInfo): VmInfo => {
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
  const workspaces = ready.then((vms) => new WorkspaceService({ vms, runner, scripts }));
  const withWorkspaces = <T>(fn: (w: WorkspaceService) => Promise<T>) => workspaces.then(fn);
  const sessions = ready.then((vms) => new SessionService({ vms, runner, scripts }));
  const withSessions = <T>(fn: (s: SessionService) => Promise<T>) => sessions.then(fn);
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
        ready.then(
          () => networkStatus,
          () => networkStatus,
        ),
        new Promise<NetworkStatus>((r) => setTimeout(() => r(networkStatus), 10_000).unref()),
      ]),
    }),
    "daemon.shutdown": async () => {
      daemon.requestShutdown();
      return { stopping: true };
    },

    "vm.list": () => withVms((vms) => vms.list()),
    "vm.show": ({ name }) => withVms((vms) => withNetwork(vms.show(name))),
    "vm.create": (p, ctx) => withVms((vms) => vms.create(p, ctx.progress, ctx.signal)),
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
    "image.pull": (p, ctx) => afterSweep(() => images.pull(p, ctx.progress, ctx.signal)),
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
