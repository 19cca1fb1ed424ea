import type { Config } from "../config/config.js";
import type { Store } from "../store/store.js";
import { allocateAddress, gatewayOf, macFor, parseSubnet, type Subnet } from "./addresses.js";
import { DnsResponder } from "./dns.js";
import type { PrivilegedOps } from "./privileged.js";

export interface Attachment {
  tap: string;
  mac: string;
  ip: string;
  prefix: number;
  gateway: string;
}

/**
 * Bridge networking: bridge + gateway address, one tap per running VM, guest
 * addresses from the subnet (kept on the VM's row), NAT on demand, and the
 * `<name>.vm` DNS responder on the bridge address.
 */
export class BridgeNetwork {
  private readonly subnet: Subnet;
  private readonly dns: DnsResponder;
  private natReady = false;
  /** Addresses handed out but not yet on a row (starts in flight), by tap: parallel starts must not share one. */
  private readonly leases = new Map<string, string>();

  constructor(
    private readonly ops: PrivilegedOps,
    private readonly config: Config["network"],
    private readonly store: Store,
    private readonly uid: number,
  ) {
    this.subnet = parseSubnet(config.subnet);
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

  async tearDown(): Promise<void> {
    // NAT rules go with the daemon; the next daemon restores them for adopted VMs.
    if (this.natReady) await this.ops.removeNat().catch(() => undefined);
    this.natReady = false;
    await this.ops.unrouteResolver(this.config.bridge).catch(() => undefined);
    await this.dns.stop();
  }

  static tapName(vmId: string): string {
    return `bg-${vmId.slice(0, 12)}`;
  }

  /** Creates the VM's tap and picks (or keeps) its address. */
  async attach(vm: { id: string; ip: string | null; nat: boolean }): Promise<Attachment> {
    const inSubnet = vm.ip !== null && vm.ip !== "10.0.2.15";
    const tap = BridgeNetwork.tapName(vm.id);
    const taken = new Set(
      this.store
        .listVms()
        .filter((v) => v.id !== vm.id && v.ip)
        .map((v) => v.ip!),
    );
    for (const [leasedTap, leasedIp] of this.leases) if (leasedTap !== tap) taken.add(leasedIp);
    const ip = inSubnet && !taken.has(vm.ip!) ? vm.ip! : allocateAddress(this.subnet, taken);
    this.leases.set(tap, ip);
    try {
      await this.ops.createTap(tap, this.config.bridge, this.uid);
    } catch (err) {
      this.leases.delete(tap);
      throw err;
    }
    await this.adopt(vm);
    return { tap, mac: macFor(vm.id), ip, prefix: this.subnet.prefix, gateway: this.gateway };
  }

  /** A running VM found at start-up: make sure what it was given (NAT) is in place again. */
  async adopt(vm: { nat: boolean }): Promise<void> {
    if (vm.nat && !this.natReady) {
      await this.ops.ensureNat(this.config.subnet, this.config.bridge);
      this.natReady = true;
    }
  }

  async detach(tap: string | null): Promise<void> {
    if (!tap) return;
    this.leases.delete(tap);
    await this.ops.deleteTap(tap);
  }
}
