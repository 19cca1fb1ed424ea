import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { BangerError, ErrorCode } from "../api/errors.js";
import type { VmInfo } from "../api/methods.js";
import { defaultConfig, loadConfig } from "../config/config.js";
import { checkVmShape } from "../config/limits.js";
import { resolveVmDefaults } from "../config/vm-defaults.js";
import { createRootOverlay, createWorkDisk } from "../disk/work-disk.js";
import {
  daemonSshOptions,
  ensureSshIdentity,
  forgetHostKey,
  vmmExitedDuringBoot,
  waitForSsh,
  type GuestTarget,
  type SshIdentity,
} from "../guest/ssh.js";
import type { ImageService, Progress } from "../image/service.js";
import type { KernelService } from "../kernel/service.js";
import type { Layout } from "../paths/layout.js";
import type { Store, VmRow } from "../store/store.js";
import {
  detectAccel,
  realAccelDeps,
  resolveAccel,
  tcgKernelArgs,
  type AccelDeps,
} from "../system/accel.js";
import { runChecked, type CommandRunner } from "../system/runner.js";
import { tailLines } from "../util/terminal-text.js";
import {
  GUEST_REPLY_MAX_BYTES,
  GuestOutputTooLargeError,
  rethrowGuestOutput,
} from "../guest/output.js";
import { DEFAULT_CONSOLE_LOG_BYTES } from "../vmm/console-log.js";
import type { Driver, VmHandles, VmSpec } from "../vmm/driver.js";
import { BridgeNetwork } from "../net/network.js";
import {
  startUserNat,
  stopUserNat,
  userNatRunning,
  USER_NET,
  type UserNatHandles,
} from "../net/user-nat.js";
import { KeyedLock } from "./locks.js";
import { VM_CREATING_MARKER } from "./sweep.js";
import { randomVmName, VM_NAME } from "../api/vm-names.js";

/** The longest the guest's own poweroff over SSH may take (it returns at once when the guest answers). */
const POWEROFF_SSH_MS = 10_000;

export interface VmServiceDeps {
  store: Store;
  layout: Layout;
  runner: CommandRunner;
  images: ImageService;
  kernels: KernelService;
  /** VMM drivers by name; qemu is always there. */
  drivers: { qemu: Driver; firecracker?: Driver };
  /** Which VMM new VMs get (config vmm = auto|qemu|firecracker, resolved). */
  pickVmm: () => Promise<"qemu" | "firecracker">;
  /** Bridge networking when the daemon may create taps; null means rootless user-mode networking. */
  network?: BridgeNetwork | null;
  host: { cpus: number; memoryBytes: number };
  accel?: AccelDeps;
  /** Overrides config `timeouts.ssh_wait`: how long `start` waits for SSH. */
  sshDeadlineMs?: number;
  /** Overrides config `timeouts.stop`. */
  stopDeadlineMs?: number;
  /** What `~/` means in `[[file_sync]]` host paths (default: the daemon user's home). */
  homeDir?: string;
  log?: { info(obj: object, msg: string): void; error(obj: object, msg: string): void };
}

export interface CreateRequest {
  name?: string | undefined;
  image?: string | undefined;
  kernelRef?: string | undefined;
  vcpu?: number | undefined;
  memoryBytes?: number | undefined;
  diskBytes?: number | undefined;
  nat?: boolean | undefined;
  start?: boolean | undefined;
}

export function vmInfo(row: VmRow, imageName: string | null): VmInfo {
  return {
    id: row.id,
    name: row.name,
    state: row.state,
    image: imageName,
    kernel: row.kernelRef,
    vcpu: row.vcpu,
    memoryBytes: row.memoryBytes,
    diskBytes: row.diskBytes,
    ip: row.ip,
    vmm: row.vmm,
    createdAt: row.createdAt,
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * VM lifecycle. Durable intent lives in the store; what is true right now
 * (pid, sockets, port) lives in `handles`, mirrored to vms/<id>/handles.json and
 * to the row's teardown field. Operations on one VM are serialised by its lock.
 */
export class VmService {
  private readonly handles = new Map<string, VmHandles>();
  private readonly locks = new KeyedLock();
  /** One key generation for every caller: two first creates at once ran ssh-keygen twice on one file. */
  private identity: Promise<SshIdentity> | null = null;

  constructor(private readonly deps: VmServiceDeps) {}

  private driverFor(vmm: string | null): Driver {
    if (vmm === "firecracker") {
      if (!this.deps.drivers.firecracker) {
        throw new BangerError(
          ErrorCode.Precondition,
          "this VM uses Firecracker, which is not available here",
          'install firecracker, or recreate the VM with vmm = "qemu"',
        );
      }
      return this.deps.drivers.firecracker;
    }
    return this.deps.drivers.qemu;
  }

  private driverOf(handles: VmHandles): Driver {
    return this.driverFor(handles.vmm);
  }

  private dirOf(id: string): string {
    return path.join(this.deps.layout.vmsDir, id);
  }

  /**
   * Runs fn under the VM's lifecycle lock with its row as it is once the lock is held:
   * a row read before waiting may be stale (a start or stop that ran meanwhile).
   */
  private withVmLock<T>(name: string, fn: (row: VmRow) => Promise<T>): Promise<T> {
    const id = this.row(name).id;
    return this.locks.run(id, async () => {
      const row = this.row(name);
      // Deleted and re-created under the same name while we waited: not the VM asked for.
      if (row.id !== id)
        throw new BangerError(
          ErrorCode.NotFound,
          `VM ${name} was deleted while this request waited`,
          "'banger vm list' shows what exists",
        );
      return fn(row);
    });
  }

  private row(name: string): VmRow {
    const row = this.deps.store.getVmByName(name);
    if (!row)
      throw new BangerError(
        ErrorCode.NotFound,
        `no VM named ${JSON.stringify(name)}`,
        "'banger vm list' shows what exists",
      );
    return row;
  }

  private info(row: VmRow): VmInfo {
    const image = row.imageId
      ? this.deps.store.listImages().find((i) => i.id === row.imageId)
      : undefined;
    return vmInfo(row, image?.name ?? null);
  }

  private sshIdentity(): Promise<SshIdentity> {
    this.identity ??= ensureSshIdentity(this.deps.layout.sshDir, this.deps.runner).catch(
      (err: unknown) => {
        this.identity = null; // the next caller tries again
        throw err;
      },
    );
    return this.identity;
  }

  list(): VmInfo[] {
    return this.deps.store.listVms().map((r) => this.info(r));
  }

  show(name: string): VmInfo {
    return this.info(this.row(name));
  }

  private generateName(): string {
    for (let i = 0; i < 50; i++) {
      const name = randomVmName();
      if (!this.deps.store.getVmByName(name)) return name;
    }
    return `vm-${randomBytes(3).toString("hex")}`;
  }

  /** Validates everything first; then builds disks under vms/<id>/, removing it all on any failure. */
  async create(
    req: CreateRequest,
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<VmInfo & { warnings: string[] }> {
    const name = req.name ?? this.generateName();
    if (!VM_NAME.test(name)) {
      throw new BangerError(
        ErrorCode.InvalidParams,
        `invalid VM name ${JSON.stringify(name)}`,
        "a DNS label: lower-case letters, digits and '-', at most 63, not starting or ending with '-'",
      );
    }
    if (this.deps.store.getVmByName(name)) {
      throw new BangerError(
        ErrorCode.AlreadyExists,
        `a VM named "${name}" already exists`,
        `pick another --name, or 'banger vm delete ${name}'`,
      );
    }
    const config = await loadConfig(this.deps.layout.configFile);
    const defaults = resolveVmDefaults(config, this.deps.host);
    const vcpu = req.vcpu ?? defaults.vcpu.value;
    const memoryBytes = req.memoryBytes ?? defaults.memoryBytes.value;
    const diskBytes = req.diskBytes ?? defaults.diskBytes.value;
    checkVmShape({ vcpu, memoryBytes, diskBytes }, this.deps.host);
    const imageName = req.image ?? config.defaultImageName;
    if (
      req.image &&
      !this.deps.store.getImageByName(req.image) &&
      req.image !== "debian-bookworm"
    ) {
      throw new BangerError(
        ErrorCode.NotFound,
        `no image named ${JSON.stringify(req.image)}`,
        "'banger image list' shows what exists; 'banger image pull <ref>' adds one",
      );
    }

    return this.locks.run(`name:${name}`, async () => {
      const image = await this.deps.images.ensure(imageName, progress, signal);
      const kernel = await this.deps.kernels.ensure(
        req.kernelRef ?? image.kernel ?? "debian-cloud",
        (p) => progress({ ...p, stage: `kernel: ${p.stage}` }),
        signal,
      );
      const id = randomBytes(6).toString("hex");
      const vmm = await this.deps.pickVmm();
      const dir = this.dirOf(id);
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      // Until the row exists this dir is unfinished work the start-up sweep may remove.
      await fsp.writeFile(path.join(dir, VM_CREATING_MARKER), "");
      const now = new Date().toISOString();
      const row: VmRow = {
        id,
        name,
        imageId: image.id,
        kernelRef: kernel.name,
        vcpu,
        memoryBytes,
        diskBytes,
        state: "created",
        nat: req.nat ?? false,
        ip: null,
        mac: null,
        vmm,
        teardownJson: null,
        createdAt: now,
        updatedAt: now,
      };
      const warnings: string[] = [];
      try {
        progress({ stage: "disks", message: "copy-on-write root" });
        if (vmm === "firecracker") {
          // Firecracker takes raw disks: a reflink copy where the filesystem can, else a sparse copy.
          const root = path.join(dir, "root.ext4");
          await runChecked(this.deps.runner, "cp", [
            "--reflink=auto",
            "--sparse=always",
            image.rootfsPath,
            root,
          ]);
          // cp keeps the image's mode; the guest's disk is the user's alone, like the overlay.
          await fsp.chmod(root, 0o600);
        } else {
          await createRootOverlay({
            backing: image.rootfsPath,
            file: path.join(dir, "root.qcow2"),
            runner: this.deps.runner,
          });
        }
        const identity = await this.sshIdentity();
        progress({ stage: "disks", message: "work disk" });
        const synced = await createWorkDisk({
          file: path.join(dir, "work.ext4"),
          sizeBytes: diskBytes,
          authorizedKey: await fsp.readFile(identity.publicKey, "utf8"),
          runner: this.deps.runner,
          fileSync: config.fileSync,
          ...(this.deps.homeDir ? { homeDir: this.deps.homeDir } : {}),
        });
        warnings.push(...synced.warnings);
        for (const w of synced.warnings) this.deps.log?.info({ vm: name }, w);
        this.deps.store.insertVm(row);
      } catch (err) {
        await fsp.rm(dir, { recursive: true, force: true });
        throw err;
      }
      // The row owns the dir now (the sweep never touches what a row owns): the marker is moot.
      await fsp.rm(path.join(dir, VM_CREATING_MARKER), { force: true }).catch(() => undefined);
      if (req.start === false) return { ...this.info(row), warnings };
      try {
        return { ...(await this.start(name, progress, signal)), warnings };
      } catch (err) {
        // A create its caller gave up on (Ctrl-C, disconnect) leaves nothing behind.
        if (signal?.aborted) {
          await this.kill(name)
            .then(() => this.delete([name]))
            .catch((e: unknown) =>
              this.deps.log?.error({ err: e, vm: name }, "could not remove a cancelled VM"),
            );
        }
        throw err;
      }
    });
  }

  private async writeHandles(row: VmRow, handles: VmHandles | null): Promise<void> {
    const file = path.join(this.dirOf(row.id), "handles.json");
    if (handles) {
      this.handles.set(row.id, handles);
      await fsp.writeFile(file, `${JSON.stringify(handles, null, 2)}\n`, { mode: 0o600 });
    } else {
      this.handles.delete(row.id);
      await fsp.rm(file, { force: true });
    }
  }

  async start(name: string, progress: Progress = () => {}, signal?: AbortSignal): Promise<VmInfo> {
    return this.withVmLock(name, async (row) => {
      const current = row.state === "running" ? await this.handlesOf(row) : null;
      if (current && (await this.driverOf(current).status(current)) === "running") {
        throw new BangerError(
          ErrorCode.InvalidState,
          `VM ${name} is already running`,
          `'banger vm ssh ${name}' to use it`,
        );
      }
      // Recorded as running but its VMM is gone (it crashed): give back what it held first.
      if (row.state === "running") await this.releaseDead(row, current);
      const kernel = await this.deps.kernels.show(row.kernelRef ?? "debian-cloud");
      const driver = this.driverFor(row.vmm);
      const config = await loadConfig(this.deps.layout.configFile);
      const accelDeps = this.deps.accel ?? realAccelDeps();
      const accel = resolveAccel(config.accel, await detectAccel(accelDeps));
      const extra =
        accel === "tcg"
          ? tcgKernelArgs(await accelDeps.readFile("/proc/cpuinfo").catch(() => ""))
          : [];
      const bridge = this.deps.network ?? null;
      let network: VmSpec["network"];
      let netArgs: string[];
      let ip: string;
      if (bridge) {
        const att = await bridge.attach(row);
        network = { mode: "tap", tap: att.tap, mac: att.mac, ip: att.ip };
        netArgs = [
          `banger.ip=${att.ip}/${att.prefix}`,
          `banger.gw=${att.gateway}`,
          `banger.dns=${att.gateway}`,
        ];
        ip = att.ip;
      } else {
        // Rootless user-mode networking, SSH forwarded on 127.0.0.1: QEMU's slirp restricted
        // (no egress, no host) without --nat; passt behind banger's frame filter with it.
        network = { mode: "user", sshPort: await freePort() };
        netArgs = [
          `banger.ip=${USER_NET.ip}/${USER_NET.prefix}`,
          `banger.gw=${USER_NET.gateway}`,
          `banger.dns=${USER_NET.dns}`,
        ];
        ip = USER_NET.ip;
      }
      const cmdline = [
        kernel.cmdline ?? "console=ttyS0 reboot=t panic=-1 rw",
        "root=/dev/vda",
        ...extra,
        ...netArgs,
        `banger.hostname=${row.name}`,
      ].join(" ");
      const dir = this.dirOf(row.id);
      const spec: VmSpec = {
        id: row.id,
        name: row.name,
        vcpu: row.vcpu,
        memoryBytes: row.memoryBytes,
        accel,
        kernel: {
          vmlinuz: kernel.files.vmlinuz,
          vmlinux: kernel.files.vmlinux,
          initrd: kernel.files.initrd,
          cmdline,
        },
        rootDisk: path.join(dir, driver.name === "firecracker" ? "root.ext4" : "root.qcow2"),
        workDisk: path.join(dir, "work.ext4"),
        dir,
        network,
        consoleLogBytes: config.consoleLogBytes,
      };
      progress({
        stage: "boot",
        message: `${driver.name}, ${accel === "kvm" ? "KVM" : "software emulation (TCG)"}`,
      });
      let handles: VmHandles;
      let userNet: UserNatHandles | null = null;
      try {
        if (network.mode === "user" && row.nat && driver.name === "qemu") {
          progress({ stage: "network", message: "passt (user-mode egress)" });
          userNet = await startUserNat({ dir, sshPort: network.sshPort, runner: this.deps.runner });
          spec.network = { ...network, stream: userNet.socket };
        }
        handles = { ...(await driver.start(spec)), ...(userNet ? { userNet } : {}) };
      } catch (err) {
        if (userNet) await stopUserNat(userNet, dir).catch(() => undefined);
        if (network.mode === "tap") await bridge?.detach(network.tap, { failed: true });
        throw err;
      }
      await this.writeHandles(row, handles);
      this.deps.store.updateVm(row.id, {
        state: "running",
        ip,
        mac: network.mode === "tap" ? network.mac : null,
        teardownJson: JSON.stringify(handles),
      });
      progress({ stage: "ssh", message: "waiting for sshd" });
      try {
        await waitForSsh({
          identity: await this.sshIdentity(),
          vmName: row.name,
          host: handles.sshHost,
          port: handles.sshPort,
          runner: this.deps.runner,
          deadlineMs: this.deps.sshDeadlineMs ?? config.timeouts.sshWaitMs,
          isAlive: async () => (await driver.status(handles)) === "running",
          ...(signal ? { signal } : {}),
        });
      } catch (err) {
        // A live VMM stays running for inspection (SshTimeout) or for the caller to remove
        // (a cancelled create). A dead one holds nothing: its row must not say running.
        if ((await driver.status(handles).catch(() => "stopped" as const)) === "running") throw err;
        await this.releaseDead(this.row(name), handles);
        // It died as the deadline ran out: not "left running for inspection".
        if (err instanceof BangerError && err.code === ErrorCode.SshTimeout)
          throw vmmExitedDuringBoot(row.name);
        throw err;
      }
      return this.info(this.row(name));
    });
  }

  /**
   * A VM recorded as running whose VMM is gone (it exited during boot, crashed, or died
   * while the daemon was down): stop its network helpers, give its tap back, forget its
   * handles and mark it stopped. Best-effort per step: a step that fails is logged.
   */
  private async releaseDead(row: VmRow, handles: VmHandles | null): Promise<void> {
    const dir = this.dirOf(row.id);
    const step = (what: string, p: Promise<unknown>) =>
      p.catch((err: unknown) => this.deps.log?.error({ err, vm: row.name }, what));
    await step(
      "could not remove the QMP socket",
      fsp.rm(path.join(dir, "qmp.sock"), { force: true }),
    );
    if (handles?.userNet) await step("could not stop passt", stopUserNat(handles.userNet, dir));
    if (handles) {
      try {
        this.driverOf(handles).release?.(handles);
      } catch (err) {
        this.deps.log?.error({ err, vm: row.name }, "could not release the console");
      }
    }
    await step(
      "could not give the tap back",
      Promise.resolve(this.deps.network?.detach(handles?.tap ?? null)),
    );
    await this.writeHandles(row, null);
    this.deps.store.updateVm(row.id, { state: "stopped", teardownJson: null });
  }

  /** Handles for a VM recorded as running: the cache, else handles.json, else the row's teardown copy. */
  private async handlesOf(row: VmRow): Promise<VmHandles | null> {
    const cached = this.handles.get(row.id);
    if (cached) return cached;
    try {
      return JSON.parse(
        await fsp.readFile(path.join(this.dirOf(row.id), "handles.json"), "utf8"),
      ) as VmHandles;
    } catch {
      try {
        return row.teardownJson ? (JSON.parse(row.teardownJson) as VmHandles) : null;
      } catch {
        return null;
      }
    }
  }

  private async shutdown(row: VmRow, mode: "graceful" | "kill"): Promise<void> {
    const handles = await this.handlesOf(row);
    if (handles) {
      if (mode === "kill") {
        await this.driverOf(handles).kill(handles);
      } else {
        // [timeouts] stop bounds the whole graceful stop: a guest that does not answer SSH
        // (frozen, hung) must not add its own wait on top of the VMM's deadline.
        const stopMs =
          this.deps.stopDeadlineMs ??
          // A config broken since the VM started must not keep it from stopping.
          (await loadConfig(this.deps.layout.configFile).catch(() => defaultConfig())).timeouts
            .stopMs;
        const end = Date.now() + stopMs;
        // Ask the guest first: minimal images have no ACPI power-button handler, so the
        // VMM's powerdown (next, with what is left of the deadline and a kill after it) is the fallback.
        if ((await this.driverOf(handles).status(handles)) === "running") {
          await this.deps.runner
            .run(
              "ssh",
              await this.guestCommandArgv(row, handles, "systemctl poweroff || poweroff"),
              { timeoutMs: Math.min(POWEROFF_SSH_MS, stopMs) },
            )
            .catch(() => undefined);
        }
        await this.driverOf(handles).stop(handles, Math.max(0, end - Date.now()));
      }
      if (handles.userNet) await stopUserNat(handles.userNet, this.dirOf(row.id));
      this.driverOf(handles).release?.(handles);
    }
    await this.deps.network?.detach(handles?.tap ?? null);
    await this.writeHandles(row, null);
    this.deps.store.updateVm(row.id, { state: "stopped", teardownJson: null });
  }

  async stop(name: string): Promise<VmInfo> {
    return this.withVmLock(name, async (row) => {
      if (row.state !== "running")
        throw new BangerError(
          ErrorCode.InvalidState,
          `VM ${name} is not running`,
          `'banger vm start ${name}' boots it`,
        );
      await this.shutdown(row, "graceful");
      return this.info(this.row(name));
    });
  }

  async kill(name: string): Promise<VmInfo> {
    return this.withVmLock(name, async (row) => {
      await this.shutdown(row, "kill");
      return this.info(this.row(name));
    });
  }

  async restart(
    name: string,
    progress: Progress = () => {},
    signal?: AbortSignal,
  ): Promise<VmInfo> {
    const row = this.row(name);
    if (row.state === "running") await this.stop(name);
    return this.start(name, progress, signal);
  }

  async delete(names: string[]): Promise<{ deleted: string[] }> {
    const rows = names.map((n) => this.row(n)); // all names valid before anything is touched
    const deleted: string[] = [];
    for (const stale of rows) {
      await this.locks.run(stale.id, async () => {
        // As it is now: a start or stop may have run while this waited for the lock.
        const row = this.deps.store.listVms().find((v) => v.id === stale.id);
        if (!row) return; // another delete got there first
        await this.shutdown(row, "graceful");
        await fsp.rm(this.dirOf(row.id), { recursive: true, force: true });
        await forgetHostKey(await this.sshIdentity(), row.name, this.deps.runner);
        this.deps.store.deleteVm(row.id);
      });
      deleted.push(stale.name);
    }
    return { deleted };
  }

  async prune(): Promise<{ deleted: string[]; failed: Array<{ name: string; error: string }> }> {
    const deleted: string[] = [];
    const failed: Array<{ name: string; error: string }> = [];
    for (const row of this.deps.store.listVms()) {
      if (row.state === "running") continue;
      try {
        await this.delete([row.name]);
        deleted.push(row.name);
      } catch (err) {
        failed.push({ name: row.name, error: (err as Error).message });
      }
    }
    return { deleted, failed };
  }

  async sshTarget(name: string): Promise<{
    host: string;
    port: number;
    user: string;
    identityFile: string;
    knownHostsFile: string;
  }> {
    const row = this.row(name);
    const handles = row.state === "running" ? await this.handlesOf(row) : null;
    if (!handles)
      throw new BangerError(
        ErrorCode.InvalidState,
        `VM ${name} is not running`,
        `'banger vm start ${name}' boots it`,
      );
    const identity = await this.sshIdentity();
    return {
      host: handles.sshHost,
      port: handles.sshPort,
      user: "root",
      identityFile: identity.privateKey,
      knownHostsFile: identity.knownHosts,
    };
  }

  /**
   * What guest-side work (workspace import, sessions) needs to reach a running VM
   * over SSH. Validated and snapshotted under the VM's lock, which is released on
   * return: the caller's guest I/O must not make stop/delete/restart wait.
   */
  async guestTarget(name: string): Promise<GuestTarget> {
    return this.withVmLock(name, async (current) => {
      const handles = current.state === "running" ? await this.handlesOf(current) : null;
      if (!handles || (await this.driverOf(handles).status(handles)) !== "running")
        throw new BangerError(
          ErrorCode.InvalidState,
          `VM ${name} is not running`,
          `'banger vm start ${name}' boots it`,
        );
      return {
        vmId: current.id,
        vmName: current.name,
        host: handles.sshHost,
        port: handles.sshPort,
        identity: await this.sshIdentity(),
      };
    });
  }

  /**
   * Serialises one kind of guest-side work on one VM (two workspace imports never
   * interleave) on a lock of its own, separate from the lifecycle lock.
   */
  exclusive<T>(kind: string, vmId: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(`${kind}:${vmId}`, fn);
  }

  /** vcpu/memory of a stopped VM; they apply at the next start. */
  async set(
    name: string,
    change: { vcpu?: number | undefined; memoryBytes?: number | undefined },
  ): Promise<VmInfo> {
    return this.withVmLock(name, async (row) => {
      if (row.state === "running")
        throw new BangerError(
          ErrorCode.InvalidState,
          `VM ${name} is running`,
          `stop it first: 'banger vm stop ${name}'`,
        );
      checkVmShape(change, this.deps.host);
      this.deps.store.updateVm(row.id, {
        ...(change.vcpu !== undefined ? { vcpu: change.vcpu } : {}),
        ...(change.memoryBytes !== undefined ? { memoryBytes: change.memoryBytes } : {}),
      });
      return this.info(this.row(name));
    });
  }

  /** Configured size, the VMM's RSS and CPU time (from /proc), and what the disks really use. */
  async stats(name: string): Promise<{
    name: string;
    vcpu: number;
    memoryBytes: number;
    rssBytes: number | null;
    cpuSeconds: number | null;
    overlayBytes: number;
    workDiskBytes: number;
  }> {
    const row = this.row(name);
    const handles = row.state === "running" ? await this.handlesOf(row) : null;
    let rssBytes: number | null = null;
    let cpuSeconds: number | null = null;
    if (handles && (await this.driverOf(handles).status(handles)) === "running") {
      const status = await fsp.readFile(`/proc/${handles.pid}/status`, "utf8").catch(() => "");
      const rss = /^VmRSS:\s+(\d+) kB/m.exec(status);
      rssBytes = rss ? Number(rss[1]) * 1024 : null;
      const stat = await fsp.readFile(`/proc/${handles.pid}/stat`, "utf8").catch(() => "");
      // Fields after the ")" of the command name: utime and stime are the 12th and 13th (clock ticks, 100/s on Linux).
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (fields.length > 13) cpuSeconds = (Number(fields[11]) + Number(fields[12])) / 100;
    }
    const used = async (file: string) =>
      ((await fsp.stat(file).catch(() => null))?.blocks ?? 0) * 512;
    const dir = this.dirOf(row.id);
    return {
      name,
      vcpu: row.vcpu,
      memoryBytes: row.memoryBytes,
      rssBytes,
      cpuSeconds,
      overlayBytes: await used(path.join(dir, "root.qcow2")),
      workDiskBytes: await used(path.join(dir, "work.ext4")),
    };
  }

  /** One command in the guest; `what` names it in the error when its output passes the cap. */
  private async sshRun(row: VmRow, command: string, what: string, timeoutMs = 15_000) {
    const handles = row.state === "running" ? await this.handlesOf(row) : null;
    if (!handles)
      throw new BangerError(
        ErrorCode.InvalidState,
        `VM ${row.name} is not running`,
        `'banger vm start ${row.name}' boots it`,
      );
    return this.deps.runner
      .run("ssh", await this.guestCommandArgv(row, handles, command), {
        timeoutMs,
        maxOutputBytes: GUEST_REPLY_MAX_BYTES,
      })
      .catch(rethrowGuestOutput(row.name, what));
  }

  /** ssh's argv for one non-interactive command in a running VM (no user ssh config). */
  private async guestCommandArgv(row: VmRow, handles: VmHandles, command: string) {
    return [
      ...daemonSshOptions(await this.sshIdentity(), row.name, handles.sshPort),
      "-o",
      "BatchMode=yes",
      `root@${handles.sshHost}`,
      command,
    ];
  }

  async health(
    name: string,
  ): Promise<{ name: string; vmm: boolean; ssh: boolean; detail: string }> {
    const row = this.row(name);
    const handles = row.state === "running" ? await this.handlesOf(row) : null;
    const vmm = handles !== null && (await this.driverOf(handles).status(handles)) === "running";
    if (!vmm)
      return {
        name,
        vmm: false,
        ssh: false,
        detail: row.state === "running" ? "the VMM process is gone" : `the VM is ${row.state}`,
      };
    const r = await this.sshRun(row, "true", "the health probe", 10_000).catch((err: unknown) =>
      err instanceof Error ? err : new Error(String(err)),
    );
    const ssh = !(r instanceof Error) && r.code === 0;
    return {
      name,
      vmm,
      ssh,
      detail: ssh
        ? "VMM running, SSH answers"
        : r instanceof GuestOutputTooLargeError
          ? `VMM running, SSH answers with far too much output: ${r.message}`
          : `VMM running, SSH does not answer: see 'banger vm logs ${name}'`,
    };
  }

  /** Listening sockets in the guest, from `ss` over SSH. */
  async ports(
    name: string,
  ): Promise<Array<{ proto: string; address: string; port: number; process: string | null }>> {
    const r = await this.sshRun(
      this.row(name),
      "ss -Htuln -p 2>/dev/null || ss -Htuln",
      "'ss' (vm ports)",
    );
    if (r.timedOut)
      throw new BangerError(
        ErrorCode.Internal,
        `VM ${name} did not answer 'ss' (vm ports) within 15 s`,
        `'banger vm health ${name}' checks the VM`,
      );
    if (r.code !== 0)
      throw new BangerError(
        ErrorCode.Internal,
        `could not list sockets in ${name}: ${tailLines(r.stderr) || `ssh exited with status ${r.code ?? r.signal}`}`,
      );
    return parseSsListening(r.stdout);
  }

  logPath(name: string): { path: string } {
    return { path: path.join(this.dirOf(this.row(name).id), "console.log") };
  }

  /**
   * Start-up reconcile: adopt VMs whose VMM still runs (they outlive the daemon);
   * demote the rest to stopped and forget their handles.
   */
  async reconcile(): Promise<void> {
    for (const row of this.deps.store.listVms()) {
      if (row.state !== "running") continue;
      const handles = await this.handlesOf(row);
      if (handles && (await this.driverOf(handles).status(handles)) === "running") {
        this.handles.set(row.id, handles);
        const consoleBytes = await loadConfig(this.deps.layout.configFile).then(
          (c) => c.consoleLogBytes,
          () => DEFAULT_CONSOLE_LOG_BYTES,
        );
        await this.driverOf(handles)
          .adopt?.(handles, consoleBytes)
          .catch((err: unknown) =>
            this.deps.log?.error({ err, vm: row.name }, "could not take the console back"),
          );
        await this.deps.network
          ?.adopt(row, handles.tap)
          .catch((err: unknown) =>
            this.deps.log?.error({ err, vm: row.name }, "could not restore NAT"),
          );
        if (handles.userNet && !(await userNatRunning(handles.userNet, this.dirOf(row.id))))
          this.deps.log?.error({ vm: row.name }, "passt or the network filter is gone: no egress");
        this.deps.log?.info({ vm: row.name, pid: handles.pid }, "adopted running VM");
        continue;
      }
      await this.releaseDead(row, handles);
      this.deps.log?.info({ vm: row.name }, "VM was not running any more: marked stopped");
    }
  }
}

/** `ss -Htuln -p` lines → protocol, local address, port and process name. */
export function parseSsListening(
  text: string,
): Array<{ proto: string; address: string; port: number; process: string | null }> {
  const out: Array<{ proto: string; address: string; port: number; process: string | null }> = [];
  for (const line of text.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 5) continue;
    const local = cols[4]!;
    const colon = local.lastIndexOf(":");
    const port = Number(local.slice(colon + 1));
    if (!Number.isInteger(port)) continue;
    const proc = /users:\(\("([^"]+)"/.exec(line)?.[1] ?? null;
    out.push({
      proto: cols[0]!,
      address: local.slice(0, colon).replace(/%\S+$/, ""),
      port,
      process: proc,
    });
  }
  return out;
}
