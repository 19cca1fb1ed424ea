import { BangerError, ErrorCode } from "../api/errors.js";

/**
 * Waits for another request's work to settle (its outcome is that request's to report), or
 * rejects as cancelled when this caller gives up first.
 */
export function waitUnlessAborted(work: Promise<unknown>, signal?: AbortSignal): Promise<void> {
  const settled = work.then(
    () => undefined,
    () => undefined,
  );
  if (!signal) return settled;
  const cancelled = () =>
    new BangerError(
      ErrorCode.Cancelled,
      "cancelled while waiting for another request doing the same work",
    );
  if (signal.aborted) return Promise.reject(cancelled());
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(cancelled());
    signal.addEventListener("abort", onAbort, { once: true });
    void settled.then(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    });
  });
}

/**
 * What an `ensure` does for a thing several requests may need at once (the default image, a
 * kernel): the one already there, else wait for the request already making it, else make it.
 * When that other request fails (or is cancelled), this one tries; after `rounds` of that it
 * gives up with `tooMany`.
 */
export async function existingOrMade<T>(steps: {
  existing(): T | null;
  inflight(): Promise<unknown> | undefined;
  waiting(): void;
  make(): Promise<T>;
  tooMany(rounds: number): BangerError;
  signal?: AbortSignal | undefined;
  rounds?: number;
}): Promise<T> {
  const rounds = steps.rounds ?? 3;
  for (let attempt = 0; ; attempt++) {
    const found = steps.existing();
    if (found !== null) return found;
    const running = steps.inflight();
    if (running) {
      steps.waiting();
      await waitUnlessAborted(running, steps.signal);
      continue;
    }
    if (attempt >= rounds) throw steps.tooMany(attempt);
    return steps.make();
  }
}

/**
 * Work in flight by name (an image build, a kernel install), so a second request for the name
 * can be refused or wait for it (`existingOrMade`'s `inflight`).
 */
export class InflightByName {
  private readonly work = new Map<string, Promise<unknown>>();

  get(name: string): Promise<unknown> | undefined {
    return this.work.get(name);
  }

  /** Runs `fn` as `name`'s work; registered before its first await, so a check right after sees it. */
  async run<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const work = fn();
    this.work.set(name, work);
    try {
      return await work;
    } finally {
      this.work.delete(name);
    }
  }
}
