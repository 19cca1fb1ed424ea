import type { Config } from "../config/config.js";
import type { Store } from "../store/store.js";
import type { NetworkAttachment, NetworkBackend, NetworkHandles, NetworkVm } from "./backend.js";
import { allocateAddress, gatewayOf, macFor, parseSubnet, type Subnet } from "./addresses.js";
import { DnsResponder } from "./dns.js";
import type { PrivilegedOps } from "./privileged.js";
import { TapPool } from "./tap-pool.js";
import { USER_NET } from "./user-nat.js";

export interface Attachment {
  tap: string;
  mac: string;
  ip: string;
  prefix: number;
  gateway: string;
}

/**
 * Bridge networking: bridge + gateway address, a tap per running VM from a
 * pool of pre-created ones, guest addresses from the subnet (kept on the VM's
 * row), NAT on demand, and the `<name>.vm` DNS responder on the bridge address.
 */
export class BridgeNetwork implements NetworkBackend {
  private readonly subnet: Subnet;
  private readonly dns: DnsResponder;
  readonly pool: TapPool;
  private natReady = false;
  /** Addresses handed out but not yet on a row (starts in flight), by VM id: parallel starts must not share one. */
  private readonly leases = new Map<string, { tap: string; ip: string }>();

  constructor(
    private readonly ops: PrivilegedOps,
    private readonly config: Config["network"],
    private readonly store: Store,
    uid: number,
    private readonly log?: {
      error(obj: object, msg: string): void;
      info?(obj: object, msg: string): void;
    },
  ) {
    this.subnet = parseSubnet(config.subnet);
    this.pool = new TapPool({
      ops,
      bridge: config.bridge,
      ownerUid: uid,
      size: config.tapPoolSize,
      ...(log ? { log } : {}),
    });
    this.dns = new DnsResponder((name) => {
      const row = store.getVmByName(name);
      return row && row.state === "running" ? row.ip : null;
    });
  }

  get gateway(): string {
    return gatewayOf(this.subnet);
  }

  async setUp(): Promise<void> {
    await this.ops.ensureBridge(this.config.bridge, `${this.gateway}/${this.subnet.prefix}`);
    await this.dns.start(this.gateway, this.config.dnsPort);
    // Where systemd-resolved runs, send ~vm queries to the responder on this link only.
    if (this.config.dnsPort === 53)
      await this.ops.routeResolver(this.config.bridge, this.gateway).catch(() => undefined);
  }

  /** After adoption: reuse or remove what an earlier daemon left on the bridge, then fill the pool. */
  async startPool(): Promise<void> {
    await this.pool.init();
  }

  async tearDown(): Promise<void> {
    // Idle taps go with the daemon; taps of running VMs stay with them.
    await this.pool.drain();
    // NAT rules go with the daemon; the next daemon restores them for adopted VMs. Removed
    // even when this daemon set none up: a crashed one's may still be there.
    await this.ops.removeNat(this.config.bridge).catch(() => undefined);
    this.natReady = false;
    await this.ops.unrouteResolver(this.config.bridge).catch(() => undefined);
    await this.dns.stop();
    // With no VM on it the bridge goes too (the next daemon makes it again); with VMs running
    // it stays for them, and the helper refuses to remove a bridge anything is attached to.
    if (this.pool.inUseTaps.length === 0)
      await this.ops
        .removeBridge?.(this.config.bridge)
        .catch((err: unknown) => this.log?.error({ err }, "could not remove the bridge"));
  }

  /** Takes a tap from the pool and picks (or keeps) the VM's address. */
  async attach(vm: { id: string; ip: string | null; nat: boolean }): Promise<Attachment> {
    // A VM last started under user-mode networking has that mode's address, not one of ours.
    const inSubnet = vm.ip !== null && vm.ip !== USER_NET.ip;
    const taken = new Set(
      this.store
        .listVms()
        .filter((v) => v.id !== vm.id && v.ip)
        .map((v) => v.ip!),
    );
    for (const [vmId, lease] of this.leases) if (vmId !== vm.id) taken.add(lease.ip);
    const ip = inSubnet && !taken.has(vm.ip!) ? vm.ip! : allocateAddress(this.subnet, taken);
    // Hold the address before the first await: a parallel attach must see it.
    this.leases.set(vm.id, { tap: "", ip });
    let tap: string;
    try {
      tap = await this.pool.take();
    } catch (err) {
      this.leases.delete(vm.id);
      throw err;
    }
    this.leases.set(vm.id, { tap, ip });
    try {
      await this.adopt(vm, null);
    } catch (err) {
      // The caller never learns this tap's name: give it and the address back here.
      this.leases.delete(vm.id);
      await this.pool.discard(tap).catch(() => undefined);
      throw err;
    }
    return { tap, mac: macFor(vm.id), ip, prefix: this.subnet.prefix, gateway: this.gateway };
  }

  /** A running VM found at start-up keeps its tap, and what it was given (NAT) is put in place again. */
  async adopt(vm: { nat: boolean }, tap: string | null): Promise<void> {
    if (tap) this.pool.markInUse(tap);
    if (vm.nat && !this.natReady) {
      await this.ops.ensureNat(this.config.subnet, this.config.bridge);
      this.natReady = true;
    }
  }

  /**
   * The VM stopped: its tap goes back to the pool (or away when the pool is full).
   * `failed`: the VM never started on it, so the tap is removed rather than reused.
   */
  async detach(tap: string | null, opts: { failed?: boolean } = {}): Promise<void> {
    if (!tap) return;
    for (const [vmId, lease] of this.leases) if (lease.tap === tap) this.leases.delete(vmId);
    if (opts.failed) await this.pool.discard(tap);
    else await this.pool.give(tap);
  }

  async attachVm(vm: NetworkVm): Promise<NetworkAttachment> {
    const att = await this.attach(vm);
    return {
      vmm: { mode: "tap", tap: att.tap, mac: att.mac, ip: att.ip },
      kernelArgs: [
        `banger.ip=${att.ip}/${att.prefix}`,
        `banger.gw=${att.gateway}`,
        `banger.dns=${att.gateway}`,
      ],
      ip: att.ip,
      mac: att.mac,
      handles: { tap: att.tap },
    };
  }

  releaseVm(
    handles: NetworkHandles,
    _vmDir: string,
    opts: { failed?: boolean } = {},
  ): Promise<void> {
    return this.detach(handles.tap, opts);
  }

  async adoptVm(vm: NetworkVm, handles: NetworkHandles): Promise<void> {
    await this.adopt(vm, handles.tap).catch((err: unknown) =>
      this.log?.error({ err, vm: vm.name }, "could not restore NAT"),
    );
  }
}
