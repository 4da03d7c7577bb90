/**
 * A bounded queue between a Stream and one output. The publisher never waits on it:
 * when it overflows, everything queued is dropped and the output skips to the next video
 * keyframe, counting what it dropped.
 */
import type { Frame, Track } from './frame.ts';

export type StreamEvent =
  | { readonly type: 'track'; readonly track: Track }
  | { readonly type: 'metadata'; readonly metadata: Readonly<Record<string, unknown>> }
  | { readonly type: 'frame'; readonly frame: Frame };

export interface OutputQueueOptions {
  maxBytes: number;
  maxFrames: number;
  /** Told of every frame this output drops, for a metric. */
  onDrop?: (frames: number) => void;
}

export class OutputQueue {
  readonly #items: StreamEvent[] = [];
  #head = 0;
  #bytes = 0;
  #frames = 0;
  #waitKeyframe = false;
  #hasVideo = false;
  #closed = false;
  #endReason: string | undefined;
  #dropped = 0;
  #overflows = 0;
  readonly #opts: OutputQueueOptions;
  /** Called when the queue goes from empty to non-empty, and once when it ends. */
  onReadable: (() => void) | undefined;

  constructor(opts: OutputQueueOptions) {
    this.#opts = opts;
  }

  get length(): number {
    return this.#items.length - this.#head;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Frames dropped because this output fell behind. */
  get dropped(): number {
    return this.#dropped;
  }

  get overflows(): number {
    return this.#overflows;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Why the stream ended, once it has and the queue is drained. */
  get ended(): string | undefined {
    return this.#closed && this.length === 0 ? this.#endReason : undefined;
  }

  /** Called by the Stream: takes a new reference to a frame it queues. */
  push(ev: StreamEvent): void {
    if (this.#closed) return;
    if (ev.type === 'frame') {
      const f = ev.frame;
      if (f.kind === 'video') this.#hasVideo = true;
      if (this.#waitKeyframe) {
        if (f.kind === 'video' && f.keyframe) this.#waitKeyframe = false;
        else if (f.kind === 'video' || this.#hasVideo) {
          this.#countDrop(1);
          return;
        }
      }
      if (this.#frames + 1 > this.#opts.maxFrames || this.#bytes + f.data.length > this.#opts.maxBytes) {
        this.#overflow();
        if (!(f.kind === 'video' && f.keyframe) && this.#hasVideo) {
          this.#countDrop(1);
          return;
        }
        this.#waitKeyframe = false;
      }
      f.data.retain();
      this.#bytes += f.data.length;
      this.#frames++;
    }
    const wasEmpty = this.length === 0;
    this.#items.push(ev);
    if (wasEmpty) this.onReadable?.();
  }

  /** Takes the next event. A frame taken is the caller's to release. */
  shift(): StreamEvent | undefined {
    if (this.#head >= this.#items.length) return undefined;
    const ev = this.#items[this.#head]!;
    this.#items[this.#head++] = undefined as unknown as StreamEvent;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items.splice(0, this.#head);
      this.#head = 0;
    }
    if (ev.type === 'frame') {
      this.#bytes -= ev.frame.data.length;
      this.#frames--;
    }
    return ev;
  }

  /** The stream has ended: nothing more is queued; the consumer drains what is left. */
  end(reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#endReason = reason;
    this.onReadable?.();
  }

  /** The consumer is gone: release everything still queued. */
  dispose(): void {
    this.#closed = true;
    this.#endReason ??= 'disposed';
    for (let ev = this.shift(); ev; ev = this.shift()) if (ev.type === 'frame') ev.frame.data.release();
  }

  #countDrop(n: number): void {
    this.#dropped += n;
    this.#opts.onDrop?.(n);
  }

  #overflow(): void {
    this.#overflows++;
    const kept: StreamEvent[] = [];
    let dropped = 0;
    for (let ev = this.shift(); ev; ev = this.shift()) {
      if (ev.type === 'frame') {
        ev.frame.data.release();
        dropped++;
      } else kept.push(ev);
    }
    this.#countDrop(dropped);
    this.#items.length = 0;
    this.#head = 0;
    this.#items.push(...kept);
    this.#waitKeyframe = true;
  }
}
