import { randomBytes } from "node:crypto";
import { TAP_PREFIX } from "./names.js";
import type { PrivilegedOps } from "./privileged.js";

export interface TapPoolDeps {
  ops: PrivilegedOps;
  bridge: string;
  /** The uid QEMU runs as: taps are created owned by it. */
  ownerUid: number;
  /** How many idle taps to keep ready; 0 creates each tap on demand. */
  size: number;
  /** Test seam for tap names; defaults to `bg-` + 12 random hex digits (15 characters). */
  newName?: () => string;
  /**
   * How long a tap must stay on no bridge, between two looks, before it is taken for a
   * leftover (default 2 s): a tap being made (by us or another daemon) is on no bridge only
   * between `ip tuntap add` and `ip link set master`, never for this long.
   */
  detachedGraceMs?: number;
  log?: { error(obj: object, msg: string): void; info?(obj: object, msg: string): void };
}

/**
 * Pre-created taps on the bridge, so a VM start does not wait for the
 * privileged round trips. Taken on start, given back on stop or delete,
 * refilled in the background; idle ones are removed when the daemon stops,
 * taps of running VMs stay with them.
 */
export class TapPool {
  private idle: string[] = [];
  private readonly inUse = new Set<string>();
  private filling: Promise<void> | null = null;
  private sweeping: Promise<void> | null = null;
  /** Ends the detached-tap sweep's wait early at shutdown. */
  private wake: (() => void) | null = null;
  /** Taps being created right now: on no bridge for a moment, and ours. */
  private readonly creating = new Set<string>();
  private closed = false;

  constructor(private readonly deps: TapPoolDeps) {}

  private newName(): string {
    return this.deps.newName?.() ?? `${TAP_PREFIX}${randomBytes(6).toString("hex")}`;
  }

  private async create(): Promise<string> {
    const name = this.newName();
    this.creating.add(name);
    try {
      await this.deps.ops.createTap(name, this.deps.bridge, this.deps.ownerUid);
    } finally {
      this.creating.delete(name);
    }
    return name;
  }

  /** Taps VMs hold right now (a copy). */
  get inUseTaps(): string[] {
    return [...this.inUse];
  }

  /** Idle taps right now (a copy). */
  get idleTaps(): string[] {
    return [...this.idle];
  }

  /** A running VM found at start-up keeps its tap; the pool never hands it out. */
  markInUse(tap: string): void {
    this.inUse.add(tap);
    this.idle = this.idle.filter((t) => t !== tap);
  }

  /**
   * After adoption: every other `bg-` tap on the bridge was left by an earlier
   * daemon. Ours (right owner) become idle pool taps, up to the pool size; the
   * rest are removed. Then the pool fills up in the background.
   */
  async init(): Promise<void> {
    const found = await this.deps.ops.listTaps(this.deps.bridge);
    // Taps given back by reconcile for VMs that did not survive (a host reboot) may no
    // longer exist: only what is on the bridge now, and ours, stays idle.
    const ours = new Set(found.filter((t) => t.ownerUid === this.deps.ownerUid).map((t) => t.name));
    this.idle = this.idle.filter((t) => ours.has(t));
    for (const tap of found) {
      if (this.inUse.has(tap.name) || this.idle.includes(tap.name)) continue;
      if (tap.ownerUid === this.deps.ownerUid && this.idle.length < this.deps.size) {
        this.idle.push(tap.name);
        continue;
      }
      await this.deps.ops
        .deleteTap(tap.name)
        .catch((err: unknown) =>
          this.deps.log?.error({ err, tap: tap.name }, "could not remove a leftover tap"),
        );
    }
    this.refill();
    this.sweepDetached();
  }

  /**
   * In the background: removes our taps on no bridge (made, never attached: a crash between
   * the two steps). Ours means `bg-`, owned by our uid, held by no process, and still on no
   * bridge a grace period after the first look; a tap on another bridge is never listed.
   */
  private sweepDetached(): void {
    const ops = this.deps.ops;
    if (!ops.listDetachedTaps || this.sweeping || this.closed) return;
    const loose = async () =>
      new Set(
        (await ops.listDetachedTaps!())
          .filter((t) => t.ownerUid === this.deps.ownerUid && !t.open)
          .map((t) => t.name)
          .filter((n) => !this.creating.has(n) && !this.inUse.has(n) && !this.idle.includes(n)),
      );
    this.sweeping = (async () => {
      const first = await loose();
      // A drain() during that first look found no timer to wake: do not wait the grace out.
      if (first.size === 0 || this.closed) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, this.deps.detachedGraceMs ?? 2_000);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = null;
      if (this.closed) return; // the next daemon looks again
      for (const tap of await loose()) {
        if (!first.has(tap)) continue;
        try {
          await ops.deleteTap(tap);
          this.deps.log?.info?.({ tap }, "removed a tap of ours that was on no bridge");
        } catch (err) {
          this.deps.log?.error({ err, tap }, "could not remove a detached tap");
        }
      }
    })()
      .catch((err: unknown) => this.deps.log?.error({ err }, "detached tap sweep failed"))
      .finally(() => {
        this.sweeping = null;
      });
  }

  /** An idle tap, or a new one when the pool is empty. */
  async take(): Promise<string> {
    const tap = this.idle.shift() ?? (await this.create());
    this.inUse.add(tap);
    this.refill();
    return tap;
  }

  /** A VM is done with its tap: keep it for the next one, or remove it when the pool is full. */
  async give(tap: string): Promise<void> {
    this.inUse.delete(tap);
    if (!this.closed && this.idle.length < this.deps.size && !this.idle.includes(tap)) {
      this.idle.push(tap);
      return;
    }
    if (!this.idle.includes(tap)) await this.deps.ops.deleteTap(tap);
  }

  /** A tap that failed a VM start is not trusted for the next one: removed, and the pool refilled. */
  async discard(tap: string): Promise<void> {
    this.inUse.delete(tap);
    this.idle = this.idle.filter((t) => t !== tap);
    await this.deps.ops.deleteTap(tap);
    this.refill();
  }

  /** Tops the pool up in the background; failures are logged, the next take creates on demand. */
  refill(): void {
    if (this.filling || this.closed) return;
    this.filling = (async () => {
      while (!this.closed && this.idle.length < this.deps.size) {
        let tap: string;
        try {
          tap = await this.create();
        } catch (err) {
          this.deps.log?.error({ err }, "could not pre-create a tap");
          return;
        }
        if (this.closed || this.idle.length >= this.deps.size) await this.deps.ops.deleteTap(tap);
        else this.idle.push(tap);
      }
    })()
      .catch((err: unknown) => this.deps.log?.error({ err }, "tap pool refill failed"))
      .finally(() => {
        this.filling = null;
      });
  }

  /** Resolves once no refill is running. */
  async settled(): Promise<void> {
    while (this.filling || this.sweeping) await (this.filling ?? this.sweeping);
  }

  /** Daemon shutdown: no more refills; idle taps are removed, taps in use stay with their VMs. */
  async drain(): Promise<void> {
    this.closed = true;
    this.wake?.();
    await this.settled();
    const idle = this.idle;
    this.idle = [];
    for (const tap of idle)
      await this.deps.ops
        .deleteTap(tap)
        .catch((err: unknown) => this.deps.log?.error({ err, tap }, "could not remove a pool tap"));
  }
}
