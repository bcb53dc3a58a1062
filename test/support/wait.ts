/**
 * Generic waits for tests: poll a condition until it holds, with a bound, so a test waits
 * for an event it can observe instead of sleeping a fixed time.
 */

/** Poll `check` until it returns true (or a value other than false/undefined); fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 5000): Promise<Exclude<T, false | undefined>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== false && v !== undefined) return v as Exclude<T, false | undefined>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
