/**
 * A real-time clock shared by many subscribers: one timer ticks every `tickMs` on a fixed grid
 * from the start (no drift), stops by itself after `maxMs`, and hands each tick to `onTick`.
 */
export abstract class TickFeed<S> {
  readonly tickMs: number;
  protected readonly subs = new Set<S>();
  readonly #maxMs: number;
  #t0 = 0;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;
  /** Ticks run so far. */
  ticks = 0;

  constructor(tickMs: number, maxMs: number) {
    this.tickMs = tickMs;
    this.#maxMs = maxMs;
  }

  /** Media time now, in ms since start. */
  now(): number {
    return this.#t0 === 0 ? 0 : performance.now() - this.#t0;
  }

  start(): void {
    if (this.#t0 !== 0 || this.#stopped) return;
    this.#t0 = performance.now();
    this.#arm();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
  }

  subscribe(s: S): void {
    this.subs.add(s);
  }

  unsubscribe(s: S): void {
    this.subs.delete(s);
  }

  /** One tick, `elapsedMs` after the start. */
  protected abstract onTick(elapsedMs: number): void;

  #arm(): void {
    if (this.#stopped) return;
    const next = this.#t0 + (this.ticks + 1) * this.tickMs;
    this.#timer = setTimeout(() => this.#tick(), Math.max(0, next - performance.now()));
  }

  #tick(): void {
    const elapsed = performance.now() - this.#t0;
    if (elapsed >= this.#maxMs) return this.stop();
    this.ticks++;
    this.onTick(elapsed);
    this.#arm();
  }
}
