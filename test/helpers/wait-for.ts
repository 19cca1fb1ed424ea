/** Polls `check` every 50 ms until it returns a value, for at most `ms`. */
export async function waitFor<T>(
  what: string,
  ms: number,
  check: () => Promise<T | null>,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
