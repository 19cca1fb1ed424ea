// The seam of `banger system`: everything it touches outside itself, one object.
import type { CommandRunner } from "./runner.js";
import type { UnitPaths } from "./systemd-units.js";
import type { UserFiles } from "./user-files.js";
import type { UserInfo } from "./users.js";

export type { UserInfo };

/** Everything `banger system` touches outside itself; tests install into a temp root with a fake systemctl. */
export interface SystemDeps extends UnitPaths {
  /** Prefix of every file path: "/" for real, a temp dir in tests. */
  root: string;
  /** Runs systemctl. */
  runner: CommandRunner;
  env: Readonly<Record<string, string | undefined>>;
  euid: number;
  lookupUser(spec: string): Promise<UserInfo | null>;
  /** File steps in the user's home, done as that user: root never writes where they can swap paths. */
  userFiles(user: UserInfo): UserFiles;
  /** Why root must not run code from this path (someone else can change it), or null when it may. */
  whyNotRootOwned(path: string): Promise<string | null>;
  /** Whether banger-helper answers on this socket for this uid, and what it said. */
  probeHelper(socket: string, uid: number): Promise<{ answers: boolean; detail: string }>;
  /** Whether a bangerd answers on this socket. */
  daemonAnswers(socket: string): Promise<boolean>;
  /**
   * Why the host cannot give this subnet to a helper (it overlaps a route or address the host
   * already has), or null: the helper checks the same at start and would refuse to run.
   */
  hostSubnetClash(bridge: string, subnet: string): Promise<string | null>;
  /**
   * The helper pin for this bridge and subnet (the subnet canonical); throws when banger-helper
   * would refuse it. The rules live in net/ (pin.ts), which system/ does not import.
   */
  pinFor(bridge: string, subnet: string): { bridge: string; subnet: string };
  /** Whether two CIDRs share an address (two users' helpers must not). */
  subnetsOverlap(a: string, b: string): boolean;
  /** One line of what was done, for the user. */
  say(line: string): void;
}
