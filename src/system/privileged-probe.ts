// A type only: net/privileged-mode.ts probes, doctor (here in system/) reports what it found, so
// system/ never imports net/.

/** Who would run the privileged steps for a daemon of this uid, or why nobody can. */
export type PrivilegedProbe =
  | { mode: "root" }
  | { mode: "helper"; socket: string; servedUid: number; bridge: string; subnet: string }
  | { mode: "none"; socket: string | null; reason: string };
