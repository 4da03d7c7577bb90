/** Starts N connections spread evenly over `rampMs`, and waits until every attempt has finished. */
export async function ramp<T>(items: readonly T[], rampMs: number, connect: (item: T) => Promise<void>, signal?: AbortSignal): Promise<void> {
  const n = items.length;
  const gap = n > 1 ? rampMs / (n - 1) : 0;
  const t0 = performance.now();
  const attempts: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    if (signal?.aborted) break;
    const wait = t0 + i * gap - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    attempts.push(connect(items[i]!));
  }
  await Promise.all(attempts);
}
