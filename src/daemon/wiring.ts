// The composition root: builds every service the daemon serves, chooses how VMs are networked
// (bridge or user-mode) and which VMM they run on, and runs the start-up sweep and reconcile.
// handlers.ts maps RPC methods onto what this builds.
import fsp from "node:fs/promises";
import { BangerError } from "../api/errors.js";
import type { NetworkStatus } from "../api/methods.js";
import { loadConfig } from "../config/config.js";
import { hostResources } from "../config/vm-defaults.js";
import { loadGuestScripts } from "../guest/scripts.js";
import { createOciPuller } from "../image/oci/puller.js";
import { ImageService } from "../image/service.js";
import { KernelService } from "../kernel/service.js";
import { BridgeNetwork } from "../net/network.js";
import { pinnedNetwork, privilegedOpsFor, probePrivileged } from "../net/privileged-mode.js";
import { canOpenReadWrite, detectAccel, realAccelDeps, resolveAccel } from "../system/accel.js";
import { createCommandRunner, type CommandRunner } from "../system/runner.js";
import { ConsoleRecorders } from "../vmm/console-log.js";
import { FirecrackerDriver } from "../vmm/firecracker/driver.js";
import { QemuDriver } from "../vmm/qemu/driver.js";
import { selectVmm } from "../vmm/select.js";
import type { Daemon } from "./server.js";
import { SessionService } from "./session-service.js";
import { sendIdentity, startIdentityReader } from "../guest/identity.js";
import { IDENTITY_MS, resumedIdentity } from "../vm/restore.js";
import { SnapshotService } from "../snapshot/service.js";
import { sweepOrphans } from "./sweep.js";
import { VmService } from "../vm/service.js";
import { WorkspaceService } from "./workspace-service.js";

/** What the daemon serves. The VM-side services resolve once start-up (sweep, network, reconcile) is done. */
export interface Services {
  kernels: KernelService;
  images: ImageService;
  /** Settles when the start-up sweep is done: image and kernel requests wait for it. */
  swept: Promise<void>;
  vms: Promise<VmService>;
  workspaces: Promise<WorkspaceService>;
  sessions: Promise<SessionService>;
  snapshots: Promise<SnapshotService>;
  /** How VMs are networked and what failed, as known now ("starting" until it is chosen). */
  networkStatus(): NetworkStatus;
}

const STARTING: NetworkStatus = {
  mode: "user",
  reason: "starting",
  bridge: null,
  problem: null,
  hint: null,
};

export function wireServices(daemon: Daemon): Services {
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
  let networkStatus: NetworkStatus = STARTING;
  const ready = (async () => {
    await swept;
    const chosen = await chooseNetwork(daemon, env, runner);
    const network = chosen.network;
    networkStatus = chosen.status;
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
    // From here on a VMM that exits (a guest poweroff, a crash) is noticed and released
    // (after the pool's start-up, which must not see a tap come back meanwhile).
    if (!daemon.isClosed) {
      const exits = vms.watchExits();
      daemon.addCloser(() => exits.stop());
    }
    return vms;
  })();
  return {
    kernels,
    images,
    swept,
    vms: ready,
    workspaces: ready.then((vms) => new WorkspaceService({ vms, runner, scripts })),
    sessions: ready.then((vms) => new SessionService({ vms, runner, scripts })),
    snapshots: ready.then(
      (vms) =>
        new SnapshotService({
          vms: vms.ctx,
          prepareGuest: (target) => startIdentityReader(vms.ctx.shell, target, scripts),
          resumedGuest: async (vm, handles) => {
            if (!handles.identitySocket) return;
            await sendIdentity(handles.identitySocket, resumedIdentity(vm.name), IDENTITY_MS);
          },
        }),
    ),
    networkStatus: () => networkStatus,
  };
}

/**
 * Bridge networking when someone may create taps for us (we are root, or banger-helper
 * answers) and /dev/net/tun opens; else rootless user-mode networking, with the reason logged.
 */
async function chooseNetwork(
  daemon: Daemon,
  env: NodeJS.ProcessEnv,
  runner: CommandRunner,
): Promise<{ network: BridgeNetwork | null; status: NetworkStatus }> {
  const { store } = daemon;
  const log = daemon.deps.log;
  let networkStatus: NetworkStatus = STARTING;
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
  return { network, status: networkStatus };
}
