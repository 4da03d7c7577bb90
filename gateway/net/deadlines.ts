/**
 * Deadlines for one socket (LESSONS 9): a handshake deadline, a read-idle deadline re-armed by
 * every read, and a write-stall deadline that runs while the socket's buffer is full.
 * One timer per kind; a read costs one clock read, not a timer reset.
 */
import type { Socket } from 'node:net';

export type DeadlineKind = 'connect' | 'handshake' | 'idle' | 'write_stall';

export interface DeadlineOptions {
  handshakeMs: number;
  idleMs: number;
  writeStallMs: number;
}

export class SocketDeadlines {
  readonly #opts: DeadlineOptions;
  readonly #onExpire: (kind: DeadlineKind) => void;
  readonly #socket: Socket;
  #handshake: NodeJS.Timeout | undefined;
  #idle: NodeJS.Timeout | undefined;
  #stall: NodeJS.Timeout | undefined;
  #lastRead = performance.now();
  #idleEnabled = true;
  #expired = false;
  readonly #onDrain = (): void => this.#clearStall();

  constructor(socket: Socket, opts: DeadlineOptions, onExpire: (kind: DeadlineKind) => void) {
    this.#socket = socket;
    this.#opts = opts;
    this.#onExpire = onExpire;
    this.#handshake = setTimeout(() => this.#expire('handshake'), opts.handshakeMs);
    socket.on('drain', this.#onDrain);
  }

  /** The protocol handshake finished: the read-idle deadline takes over. */
  handshakeDone(): void {
    if (this.#handshake) clearTimeout(this.#handshake);
    this.#handshake = undefined;
    this.#lastRead = performance.now();
    if (this.#idleEnabled && !this.#expired) this.#armIdle(this.#opts.idleMs);
  }

  /** A session that only receives (a player) is watched by its writes, not its reads. */
  disableIdle(): void {
    this.#idleEnabled = false;
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = undefined;
  }

  /** Call on every read. */
  read(): void {
    this.#lastRead = performance.now();
  }

  /** Call with socket.write's result: false starts the write-stall deadline until 'drain'. */
  wrote(flushed: boolean): void {
    if (!flushed && !this.#stall && !this.#expired) {
      this.#stall = setTimeout(() => this.#expire('write_stall'), this.#opts.writeStallMs);
    }
  }

  clear(): void {
    if (this.#handshake) clearTimeout(this.#handshake);
    if (this.#idle) clearTimeout(this.#idle);
    this.#clearStall();
    this.#handshake = this.#idle = undefined;
    this.#socket.off('drain', this.#onDrain);
  }

  #armIdle(ms: number): void {
    this.#idle = setTimeout(() => {
      const silent = performance.now() - this.#lastRead;
      if (silent >= this.#opts.idleMs) this.#expire('idle');
      else this.#armIdle(this.#opts.idleMs - silent);
    }, Math.max(1, Math.ceil(ms)));
  }

  #clearStall(): void {
    if (this.#stall) clearTimeout(this.#stall);
    this.#stall = undefined;
  }

  #expire(kind: DeadlineKind): void {
    if (this.#expired) return;
    this.#expired = true;
    this.clear();
    this.#onExpire(kind);
  }
}
