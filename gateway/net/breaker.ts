/**
 * Resilience for outbound connections (LESSONS 10), on cockatiel: one circuit breaker per target
 * (consecutive failures open it) and one exponential backoff with jitter per target, and the
 * Reconnector that runs a session again and again behind them.
 *
 * One schedule for both: after a failure the next attempt waits d_k, where d_k is drawn from
 * [D_k/2, D_k) with D_k = min(maxMs, initialMs * 2^k) (cockatiel's half-jitter generator), and k counts
 * the failures since the last success. When the breaker opens (after `failures` consecutive failures),
 * its cooldown is that same d_k: the attempt that follows is the half-open probe. So the attempt times
 * follow the backoff whether the breaker is closed or open; what the breaker adds is that, while
 * open, nobody else (another session to the same target, a republished stream) gets through before
 * the probe, and that its state is visible.
 */
import {
  BrokenCircuitError,
  CircuitState,
  ConsecutiveBreaker,
  DelegateBackoff,
  ExponentialBackoff,
  circuitBreaker,
  halfJitterGenerator,
  handleAll,
  type CircuitBreakerPolicy,
  type IBackoff,
} from 'cockatiel';
import type { Logger } from 'pino';

export interface BreakerOptions {
  /** First reconnect delay (nominal; drawn from [initialMs/2, initialMs)). */
  initialMs: number;
  /** Largest nominal delay. */
  maxMs: number;
  /** Consecutive failures that open the breaker. */
  failures: number;
}

export type BreakerStateName = 'closed' | 'open' | 'half_open';

/** The value of `tributary_breaker_state`: 0 closed, 1 open, 2 half-open (cockatiel's numbering). */
export const BREAKER_STATE_VALUE: Record<BreakerStateName, number> = { closed: 0, open: 1, half_open: 2 };

export interface AttemptRecord {
  /** Epoch milliseconds when the attempt started. */
  readonly at: number;
  /** Breaker state when it started: 'half_open' marks a probe. */
  readonly state: BreakerStateName;
  readonly ok: boolean;
  readonly error?: string;
  /** After a failure: the delay before the next attempt (ms). */
  readonly retryInMs?: number;
}

export interface BreakerView {
  target: string;
  state: BreakerStateName;
  consecutiveFailures: number;
  /** While open: when the probe is let through (ISO time). */
  probeAt: string | null;
  lastError: string | null;
  attempts: AttemptRecord[];
}

const KEPT_ATTEMPTS = 32;

function stateName(s: CircuitState): BreakerStateName {
  return s === CircuitState.Closed ? 'closed' : s === CircuitState.HalfOpen ? 'half_open' : 'open';
}

/** One outbound target (a URL without its query): its breaker, its backoff and its recent attempts. */
export class TargetBreaker {
  readonly target: string;
  readonly #opts: BreakerOptions;
  readonly #policy: CircuitBreakerPolicy;
  readonly #backoffFactory: ExponentialBackoff<number>;
  /** The backoff step of the last failure (or session end); undefined after a success. */
  #backoff: IBackoff<unknown> | undefined;
  #delay = 0;
  #openedAt = 0;
  #failures = 0;
  #lastError: string | null = null;
  readonly #attempts: AttemptRecord[] = [];
  /** Sessions using this target (see BreakerRegistry). */
  refs = 0;

  constructor(target: string, opts: BreakerOptions) {
    this.target = target;
    this.#opts = opts;
    this.#backoffFactory = new ExponentialBackoff({ initialDelay: opts.initialMs, maxDelay: opts.maxMs, generator: halfJitterGenerator });
    this.#policy = circuitBreaker(handleAll, {
      breaker: new ConsecutiveBreaker(opts.failures),
      // The cooldown of an open breaker is the current step of this target's backoff.
      halfOpenAfter: new DelegateBackoff(() => this.#delay),
    });
    this.#policy.onBreak(() => {
      this.#openedAt = Date.now();
    });
  }

  get state(): BreakerStateName {
    return stateName(this.#policy.state);
  }

  get consecutiveFailures(): number {
    return this.#failures;
  }

  get attempts(): readonly AttemptRecord[] {
    return this.#attempts;
  }

  /** The delay to wait after the last failure or session end (the open breaker's cooldown). */
  get retryDelayMs(): number {
    return this.#delay;
  }

  /** While open: ms until the probe may go through; 0 otherwise. */
  msUntilProbe(now = Date.now()): number {
    if (this.#policy.state !== CircuitState.Open) return 0;
    return Math.max(0, this.#openedAt + this.#delay - now);
  }

  /**
   * Runs one connection attempt behind the breaker. Rejects with BrokenCircuitError, without calling
   * `fn`, while the breaker is open; otherwise with what `fn` rejected with.
   */
  async attempt<T>(fn: () => Promise<T>): Promise<T> {
    const at = Date.now();
    // An attempt that gets through an open breaker is its half-open probe.
    const state: BreakerStateName = this.state === 'closed' ? 'closed' : 'half_open';
    try {
      const value = await this.#policy.execute(async () => {
        try {
          return await fn();
        } catch (err) {
          // Advance the backoff before cockatiel decides to open, so its cooldown is this step.
          this.#step();
          throw err;
        }
      });
      this.#backoff = undefined;
      this.#delay = 0;
      this.#failures = 0;
      this.#record({ at, state, ok: true });
      return value;
    } catch (err) {
      if (err instanceof BrokenCircuitError) throw err;
      this.#failures++;
      this.#lastError = (err as Error).message;
      this.#record({ at, state, ok: false, error: this.#lastError, retryInMs: this.#delay });
      throw err;
    }
  }

  /**
   * An established session ended: the next attempt waits the first backoff step, so a target that
   * accepts and then drops at once is not reconnected in a tight loop. Returns that delay.
   */
  sessionEnded(): number {
    this.#backoff = undefined;
    this.#step();
    return this.#delay;
  }

  view(): BreakerView {
    const probe = this.msUntilProbe();
    return {
      target: this.target,
      state: this.state,
      consecutiveFailures: this.#failures,
      probeAt: this.state === 'open' ? new Date(Date.now() + probe).toISOString() : null,
      lastError: this.#lastError,
      attempts: [...this.#attempts],
    };
  }

  #step(): void {
    this.#backoff = this.#backoff ? this.#backoff.next(undefined) : this.#backoffFactory.next();
    this.#delay = Math.max(1, Math.round(this.#backoff.duration));
  }

  #record(r: AttemptRecord): void {
    this.#attempts.push(r);
    if (this.#attempts.length > KEPT_ATTEMPTS) this.#attempts.shift();
  }

  /** Whether forgetting this breaker loses nothing: closed, no failures, nobody using it. */
  get idle(): boolean {
    return this.refs === 0 && this.#failures === 0 && this.state === 'closed';
  }

  /** Unused and its last attempt long enough ago that it would have let a probe through anyway. */
  stale(now = Date.now()): boolean {
    const last = this.#attempts[this.#attempts.length - 1];
    return this.refs === 0 && (last === undefined || now - last.at > 2 * this.#opts.maxMs);
  }
}

/** The breakers by target. A target's breaker outlives its sessions while it carries state worth keeping. */
export class BreakerRegistry {
  readonly #breakers = new Map<string, TargetBreaker>();
  readonly #opts: BreakerOptions;

  constructor(opts: BreakerOptions) {
    this.#opts = opts;
  }

  acquire(target: string): TargetBreaker {
    this.#sweep();
    let b = this.#breakers.get(target);
    if (!b) {
      b = new TargetBreaker(target, this.#opts);
      this.#breakers.set(target, b);
    }
    b.refs++;
    return b;
  }

  release(b: TargetBreaker): void {
    b.refs = Math.max(0, b.refs - 1);
    if (b.idle && this.#breakers.get(b.target) === b) this.#breakers.delete(b.target);
    this.#sweep();
  }

  get(target: string): TargetBreaker | undefined {
    return this.#breakers.get(target);
  }

  list(): TargetBreaker[] {
    return [...this.#breakers.values()];
  }

  #sweep(): void {
    const now = Date.now();
    for (const [k, b] of this.#breakers) if (b.stale(now)) this.#breakers.delete(k);
  }
}

/** An established outbound session, as the Reconnector sees it. */
export interface SessionHandle {
  /** Resolves with the reason once the session has ended (never rejects). */
  readonly ended: Promise<string>;
  close(reason: string): void;
}

export interface ReconnectorOptions {
  breaker: TargetBreaker;
  log: Logger;
  /**
   * Establishes one session. Resolves once it is up (a success for the breaker); rejects if it could
   * not be. Must give up promptly when `signal` aborts.
   */
  connect(signal: AbortSignal): Promise<SessionHandle>;
  /** Told of every attempt's outcome, for metrics. */
  onAttempt?(ok: boolean, error?: unknown): void;
  /** Asked when a session has ended: false stops the Reconnector (its work is done). Default: always go on. */
  shouldReconnect?(): boolean;
}

export type ReconnectorState = 'connecting' | 'up' | 'waiting' | 'closed';

/**
 * Keeps one outbound session up: connect, run until it ends, wait the backoff, again; behind the
 * target's breaker. It owns its one timer, the in-flight attempt (through an AbortSignal) and the
 * live session, and releases all three on close().
 */
export class Reconnector {
  readonly #opts: ReconnectorOptions;
  readonly #log: Logger;
  readonly #abort = new AbortController();
  #state: ReconnectorState = 'waiting';
  #timer: NodeJS.Timeout | undefined;
  #wake: (() => void) | undefined;
  #session: SessionHandle | undefined;
  #nextAttemptAt: number | undefined;
  #upSince: number | undefined;
  #done: Promise<void> | undefined;

  constructor(opts: ReconnectorOptions) {
    this.#opts = opts;
    this.#log = opts.log;
  }

  get state(): ReconnectorState {
    return this.#state;
  }

  /** Epoch ms of the next attempt while waiting. */
  get nextAttemptAt(): number | undefined {
    return this.#state === 'waiting' ? this.#nextAttemptAt : undefined;
  }

  get upSince(): number | undefined {
    return this.#state === 'up' ? this.#upSince : undefined;
  }

  /** Whether it still holds a timer, an attempt or a session. */
  get holding(): boolean {
    return this.#timer !== undefined || this.#session !== undefined || this.#state === 'connecting';
  }

  start(): void {
    this.#done ??= this.#loop().catch((err: unknown) => this.#log.error({ err }, 'reconnector failed'));
  }

  /** Stops for good: clears the timer, aborts an attempt, closes the session. Resolves when the loop has exited. */
  close(reason: string): Promise<void> {
    if (this.#state !== 'closed') {
      this.#state = 'closed';
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#wake?.();
      this.#abort.abort(new Error(reason));
      this.#session?.close(reason);
    }
    return this.#done ?? Promise.resolve();
  }

  async #loop(): Promise<void> {
    const breaker = this.#opts.breaker;
    let delay = breaker.msUntilProbe();
    while (!this.closed) {
      if (delay > 0) {
        this.#state = 'waiting';
        this.#nextAttemptAt = Date.now() + delay;
        await this.#sleep(delay);
        if (this.closed) break;
      }
      this.#state = 'connecting';
      let session: SessionHandle;
      try {
        session = await breaker.attempt(() => this.#opts.connect(this.#abort.signal));
      } catch (err) {
        if (this.closed) break;
        if (err instanceof BrokenCircuitError) {
          // Open, and its probe is not due yet (another session of this target failed meanwhile).
          delay = Math.max(5, breaker.msUntilProbe());
          continue;
        }
        this.#opts.onAttempt?.(false, err);
        delay = breaker.retryDelayMs;
        this.#log.warn(
          { target: breaker.target, err: (err as Error).message, failures: breaker.consecutiveFailures, breaker: breaker.state, retryInMs: delay },
          'outbound attempt failed',
        );
        continue;
      }
      this.#opts.onAttempt?.(true);
      if (this.closed) {
        session.close('closed while connecting');
        break;
      }
      this.#session = session;
      this.#state = 'up';
      this.#upSince = Date.now();
      const reason = await session.ended;
      this.#session = undefined;
      if (this.closed) break;
      if (this.#opts.shouldReconnect && !this.#opts.shouldReconnect()) {
        this.#log.info({ target: breaker.target, reason }, 'outbound session ended');
        break;
      }
      delay = breaker.sessionEnded();
      this.#log.info({ target: breaker.target, reason, retryInMs: delay }, 'outbound session ended; reconnecting');
    }
    this.#state = 'closed';
  }

  get closed(): boolean {
    return this.#state === 'closed';
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.#wake = () => {
        this.#wake = undefined;
        resolve();
      };
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#wake?.();
      }, ms);
    });
  }
}
