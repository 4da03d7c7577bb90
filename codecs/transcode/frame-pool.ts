/**
 * The decoded-frame pool: a fixed number of frame slots that every decoded and scaled picture of a
 * transcode lives in. On the GPU backend the pool owns the CUDA device; the pictures are CUDA surfaces
 * (NVDEC decodes into a fixed surface pool sized with `size` extra frames, scale_cuda and NVENC read
 * them there) and never leave the device. On the CPU backend the pictures are host frames from
 * libavcodec's and libavfilter's buffer pools.
 *
 * Every slot is handed out by acquire() and comes back through release(), exactly once; acquire()
 * past the size throws instead of allocating, so a leak shows up as a refused frame, not as memory.
 * Slots are native frames and are freed in close().
 */
import type { Frame, HardwareDeviceContext, HardwareFramesContext } from 'node-av/lib';
import { TranscodeError, avErrorText } from './errors.ts';
import type { NodeAv } from './native.ts';

export type PoolBackend = 'cpu' | 'gpu';

export class FramePoolExhaustedError extends TranscodeError {
  constructor(readonly size: number) {
    super('pool', `all ${size} frames of the pool are in use`);
    this.name = 'FramePoolExhaustedError';
  }
}

export interface FramePoolStats {
  readonly backend: PoolBackend;
  readonly size: number;
  readonly inUse: number;
  readonly peakInUse: number;
  /** GPU only: bytes of device memory held by the surface pools feeding this pool (from their sizes). */
  readonly deviceMemoryBytes: number;
}

/** A frame slot of the pool. `frame` is valid until release(). */
export class PooledFrame {
  readonly frame: Frame;
  readonly #pool: FramePool;
  #held = false;

  /** @internal created by FramePool */
  constructor(pool: FramePool, frame: Frame) {
    this.#pool = pool;
    this.frame = frame;
  }

  get held(): boolean {
    return this.#held;
  }

  /** @internal */
  _take(): void {
    this.#held = true;
  }

  /** @internal */
  _give(): void {
    if (!this.#held) throw new Error('release of a frame that is not held');
    this.#held = false;
  }

  release(): void {
    this.#pool.release(this);
  }
}

export interface FramePoolOptions {
  backend: PoolBackend;
  /** Frame slots; acquire() past this throws FramePoolExhaustedError. */
  size: number;
  /** CUDA device index or name for the GPU backend (default: the first device). */
  device?: string;
}

/** Bytes per pixel of the software formats CUDA surfaces come in (8-bit 4:2:0 unless 10-bit). */
function surfaceBytes(av: NodeAv, hw: HardwareFramesContext): number {
  const c = av.c;
  const bpp = hw.swFormat === c.AV_PIX_FMT_P010LE || hw.swFormat === c.AV_PIX_FMT_P016LE ? 3 : hw.swFormat === c.AV_PIX_FMT_YUV444P ? 3 : 1.5;
  return Math.ceil(hw.width * hw.height * bpp);
}

export class FramePool {
  readonly backend: PoolBackend;
  readonly size: number;
  /** The CUDA device (GPU backend only). */
  readonly device: HardwareDeviceContext | undefined;
  readonly #av: NodeAv;
  readonly #slots: PooledFrame[] = [];
  readonly #free: PooledFrame[] = [];
  readonly #surfaces = new Map<string, number>();
  #inUse = 0;
  #peak = 0;
  #closed = false;

  private constructor(av: NodeAv, opts: FramePoolOptions, device: HardwareDeviceContext | undefined) {
    this.#av = av;
    this.backend = opts.backend;
    this.size = opts.size;
    this.device = device;
    for (let i = 0; i < opts.size; i++) {
      const f = new av.lib.Frame();
      f.alloc();
      const slot = new PooledFrame(this, f);
      this.#slots.push(slot);
      this.#free.push(slot);
    }
  }

  /** A pool of `size` slots; the GPU backend opens the CUDA device or throws TranscodeError('device'). */
  static open(av: NodeAv, opts: FramePoolOptions): FramePool {
    if (!Number.isInteger(opts.size) || opts.size < 2) throw new TranscodeError('pool', `pool size ${opts.size} must be an integer of at least 2`);
    let device: HardwareDeviceContext | undefined;
    if (opts.backend === 'gpu') device = openCudaDevice(av, opts.device);
    return new FramePool(av, opts, device);
  }

  get inUse(): number {
    return this.#inUse;
  }

  get stats(): FramePoolStats {
    let deviceMemoryBytes = 0;
    for (const b of this.#surfaces.values()) deviceMemoryBytes += b;
    return { backend: this.backend, size: this.size, inUse: this.#inUse, peakInUse: this.#peak, deviceMemoryBytes };
  }

  /** A free slot, held until release(). */
  acquire(): PooledFrame {
    if (this.#closed) throw new TranscodeError('pool', 'acquire from a closed pool');
    const slot = this.#free.pop();
    if (!slot) throw new FramePoolExhaustedError(this.size);
    slot._take();
    this.#inUse++;
    if (this.#inUse > this.#peak) this.#peak = this.#inUse;
    return slot;
  }

  /** Drops the slot's picture (its reference to the decoder's or filter's buffer) and frees the slot. */
  release(slot: PooledFrame): void {
    slot._give();
    slot.frame.unref();
    this.#inUse--;
    this.#free.push(slot);
  }

  /**
   * Records the CUDA surface pool behind frames from `source` (the decoder, a scaler), so that
   * deviceMemoryBytes counts it: its fixed size when it has one, else this pool's size.
   */
  noteSurfaces(source: string, hw: HardwareFramesContext | null): void {
    if (!hw) {
      this.#surfaces.delete(source);
      return;
    }
    const count = hw.initialPoolSize > 0 ? hw.initialPoolSize : this.size;
    this.#surfaces.set(source, count * surfaceBytes(this.#av, hw));
  }

  forgetSurfaces(source: string): void {
    this.#surfaces.delete(source);
  }

  /** Frees every slot (held ones too: their owners are gone) and the device. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const slot of this.#slots) slot.frame.free();
    this.#slots.length = 0;
    this.#free.length = 0;
    this.#surfaces.clear();
    this.device?.free();
  }
}

/** Opens a CUDA device through FFmpeg (it loads libcuda itself); throws TranscodeError('device') when it cannot. */
export function openCudaDevice(av: NodeAv, device?: string): HardwareDeviceContext {
  const hw = new av.lib.HardwareDeviceContext();
  const ret = hw.create(av.c.AV_HWDEVICE_TYPE_CUDA, device ?? null, null);
  if (ret < 0) {
    hw.free();
    throw new TranscodeError('device', `no CUDA device${device ? ` ${device}` : ''}: ${avErrorText(av, ret)} (is the NVIDIA driver's libcuda.so.1 installed?)`, ret);
  }
  return hw;
}
