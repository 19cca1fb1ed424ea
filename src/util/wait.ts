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
