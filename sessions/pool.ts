/**
 * A bounded pool of reference-counted buffers in size classes.
 * Media payloads live here so that memory use is bounded and visible, and so that
 * fan-out can share one copy of a frame among many outputs.
 */

export class PoolExhaustedError extends Error {
  constructor(readonly requested: number, readonly inUse: number, readonly limit: number) {
    super(`buffer pool exhausted: ${requested} bytes requested, ${inUse} of ${limit} in use`);
    this.name = 'PoolExhaustedError';
  }
}

export interface BufferPoolOptions {
  /** Upper bound on bytes handed out at once (by size class). */
  maxBytes: number;
  /** Smallest size class; smaller requests round up to it. */
  minClass?: number;
  /** Largest pooled class; larger requests are allocated exactly and not recycled. */
  maxClass?: number;
  /** Bytes kept on free lists per class, so idle memory is returned to the GC. */
  maxIdleBytesPerClass?: number;
  /** Called when a buffer is garbage-collected without being released. */
  onLeak?: (leak: { size: number; allocatedAt?: string }) => void;
  /** Keep an allocation stack per buffer for leak reports (tests only: it is slow). */
  trackStacks?: boolean;
}

interface LeakToken {
  classSize: number;
  allocatedAt?: string;
}

export class PooledBuffer {
  #refs = 1;
  readonly #pool: BufferPool;
  readonly #slab: Buffer;
  /** The payload: a view of exactly the requested length. */
  readonly bytes: Buffer;

  /** @internal created by BufferPool.alloc */
  constructor(pool: BufferPool, slab: Buffer, length: number) {
    this.#pool = pool;
    this.#slab = slab;
    this.bytes = slab.subarray(0, length);
  }

  get length(): number {
    return this.bytes.length;
  }

  get refs(): number {
    return this.#refs;
  }

  retain(): this {
    if (this.#refs <= 0) throw new Error('retain of a released buffer');
    this.#refs++;
    return this;
  }

  release(): void {
    if (this.#refs <= 0) throw new Error('release of a released buffer');
    if (--this.#refs === 0) this.#pool._return(this, this.#slab);
  }
}

export class BufferPool {
  readonly maxBytes: number;
  readonly #minClass: number;
  readonly #maxClass: number;
  readonly #maxIdle: number;
  readonly #free = new Map<number, Buffer[]>();
  readonly #onLeak?: BufferPoolOptions['onLeak'];
  readonly #trackStacks: boolean;
  readonly #registry: FinalizationRegistry<LeakToken>;
  #bytesInUse = 0;
  #buffersInUse = 0;
  #leaks = 0;

  constructor(opts: BufferPoolOptions) {
    if (!(opts.maxBytes > 0)) throw new RangeError('maxBytes must be positive');
    this.maxBytes = opts.maxBytes;
    this.#minClass = opts.minClass ?? 256;
    this.#maxClass = opts.maxClass ?? 8 * 1024 * 1024;
    // Segment-sized slabs are freed and needed again every few seconds per stream: keeping enough of
    // them idle avoids allocating (and collecting) hundreds of kilobytes each time.
    this.#maxIdle = opts.maxIdleBytesPerClass ?? 32 * 1024 * 1024;
    this.#onLeak = opts.onLeak;
    this.#trackStacks = opts.trackStacks ?? false;
    this.#registry = new FinalizationRegistry((token) => {
      this.#bytesInUse -= token.classSize;
      this.#buffersInUse--;
      this.#leaks++;
      this.#onLeak?.({ size: token.classSize, allocatedAt: token.allocatedAt });
    });
  }

  get bytesInUse(): number {
    return this.#bytesInUse;
  }

  get buffersInUse(): number {
    return this.#buffersInUse;
  }

  /** Buffers that were collected by the GC without a release. */
  get leaks(): number {
    return this.#leaks;
  }

  /**
   * Classes step by a quarter of each power of two (1, 1.25, 1.5, 1.75 x 2^k), so a buffer wastes
   * at most a fifth of its size: HLS segments of a few hundred kilobytes would lose up to half of
   * it to power-of-two classes.
   */
  classFor(size: number): number {
    if (size > this.#maxClass) return size;
    if (size <= this.#minClass) return this.#minClass;
    const step = 2 ** Math.floor(Math.log2(size)) / 4;
    return Math.ceil(size / step) * step;
  }

  /** A buffer of exactly `size` bytes with one reference. Its contents are not zeroed. */
  alloc(size: number): PooledBuffer {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`invalid buffer size ${size}`);
    const classSize = this.classFor(size);
    if (this.#bytesInUse + classSize > this.maxBytes) {
      throw new PoolExhaustedError(size, this.#bytesInUse, this.maxBytes);
    }
    const slab = this.#free.get(classSize)?.pop() ?? Buffer.allocUnsafeSlow(classSize);
    this.#bytesInUse += classSize;
    this.#buffersInUse++;
    const buf = new PooledBuffer(this, slab, size);
    const token: LeakToken = { classSize };
    if (this.#trackStacks) token.allocatedAt = new Error('allocated here').stack;
    this.#registry.register(buf, token, buf);
    return buf;
  }

  /** A pooled copy of `src` (one or more pieces laid end to end). */
  copyOf(...src: Uint8Array[]): PooledBuffer {
    let total = 0;
    for (const s of src) total += s.length;
    const buf = this.alloc(total);
    let off = 0;
    for (const s of src) {
      buf.bytes.set(s, off);
      off += s.length;
    }
    return buf;
  }

  /** @internal called by PooledBuffer when its last reference goes. */
  _return(buf: PooledBuffer, slab: Buffer): void {
    this.#registry.unregister(buf);
    const classSize = slab.length;
    this.#bytesInUse -= classSize;
    this.#buffersInUse--;
    if (classSize > this.#maxClass) return;
    let list = this.#free.get(classSize);
    if (!list) {
      list = [];
      this.#free.set(classSize, list);
    }
    if ((list.length + 1) * classSize <= this.#maxIdle) list.push(slab);
  }
}
