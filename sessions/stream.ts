/**
 * A live stream: its tracks, the frames since the last keyframe, and its outputs.
 * One publisher feeds it; any number of outputs read it through bounded queues.
 */
import { EventEmitter } from 'node:events';
import type { Frame, Track } from './frame.ts';
import { OutputQueue, type OutputQueueOptions, type StreamEvent } from './output-queue.ts';

export interface PublisherInfo {
  readonly protocol: string;
  readonly remoteAddress: string;
  /** Ends the publishing session (kick, takeover, shutdown). */
  close(reason: string): void;
}

export interface StreamLimits {
  /** Bytes of frames kept since the last keyframe for late joiners. */
  gopCacheBytes: number;
  output: OutputQueueOptions;
}

interface StreamEvents {
  track: [Track];
  end: [string];
}

export interface TrackStats {
  frames: number;
  bytes: number;
}

export class Stream extends EventEmitter<StreamEvents> {
  readonly app: string;
  readonly name: string;
  readonly key: string;
  readonly publisher: PublisherInfo;
  readonly startedAt = new Date();
  readonly tracks = new Map<number, Track>();
  readonly trackStats = new Map<number, TrackStats>();
  metadata: Readonly<Record<string, unknown>> | undefined;
  /** What outputs say about how they carry this stream (e.g. a track they cannot carry), by output. */
  readonly notes = new Map<string, string>();
  bytesIn = 0;
  #gop: Frame[] = [];
  #gopBytes = 0;
  #gopOverflowed = false;
  #hasVideo = false;
  readonly #outputs = new Set<OutputQueue>();
  readonly #limits: StreamLimits;
  #droppedByClosedOutputs = 0;
  #ended: string | undefined;

  constructor(app: string, name: string, publisher: PublisherInfo, limits: StreamLimits) {
    super();
    this.app = app;
    this.name = name;
    this.key = `${app}/${name}`;
    this.publisher = publisher;
    this.#limits = limits;
  }

  get ended(): string | undefined {
    return this.#ended;
  }

  get framesIn(): number {
    let n = 0;
    for (const s of this.trackStats.values()) n += s.frames;
    return n;
  }

  /** Frames that outputs of this stream dropped because they fell behind. */
  get framesDropped(): number {
    let n = this.#droppedByClosedOutputs;
    for (const o of this.#outputs) n += o.dropped;
    return n;
  }

  get outputCount(): number {
    return this.#outputs.size;
  }

  /** Adds or replaces a track's configuration; outputs see it in order with the frames. */
  setTrack(track: Track): void {
    if (this.#ended) return;
    this.tracks.set(track.id, track);
    if (!this.trackStats.has(track.id)) this.trackStats.set(track.id, { frames: 0, bytes: 0 });
    if (track.kind === 'video') {
      this.#hasVideo = true;
      this.#clearGop();
    }
    this.#fanOut({ type: 'track', track });
    this.emit('track', track);
  }

  setMetadata(metadata: Readonly<Record<string, unknown>>): void {
    if (this.#ended) return;
    this.metadata = metadata;
    this.#fanOut({ type: 'metadata', metadata });
  }

  /** Publishes a frame. Takes over the caller's reference to `frame.data`. */
  push(frame: Frame): void {
    try {
      if (this.#ended || !this.tracks.has(frame.track)) return;
      const stats = this.trackStats.get(frame.track)!;
      stats.frames++;
      stats.bytes += frame.data.length;
      this.#cache(frame);
      this.#fanOut({ type: 'frame', frame });
    } finally {
      frame.data.release();
    }
  }

  /**
   * A new output: it first receives the metadata, the tracks and the frames since the last
   * keyframe, then live events. The caller owns the queue and must dispose() it when done.
   */
  attach(opts: Partial<OutputQueueOptions> = {}): OutputQueue {
    const q = new OutputQueue({ ...this.#limits.output, ...opts });
    if (this.#ended) {
      q.end(this.#ended);
      return q;
    }
    if (this.metadata) q.push({ type: 'metadata', metadata: this.metadata });
    for (const track of this.tracks.values()) q.push({ type: 'track', track });
    for (const frame of this.#gop) q.push({ type: 'frame', frame });
    this.#outputs.add(q);
    return q;
  }

  detach(q: OutputQueue): void {
    if (this.#outputs.delete(q)) this.#droppedByClosedOutputs += q.dropped;
    q.dispose();
  }

  /** Ends the stream: outputs drain what they have and see the end. Idempotent. */
  end(reason: string): void {
    if (this.#ended) return;
    this.#ended = reason;
    this.#clearGop();
    for (const q of this.#outputs) q.end(reason);
    this.emit('end', reason);
  }

  #fanOut(ev: StreamEvent): void {
    for (const q of this.#outputs) q.push(ev);
  }

  #cache(frame: Frame): void {
    if (!this.#hasVideo) return;
    if (frame.kind === 'video' && frame.keyframe) {
      this.#clearGop();
      this.#gopOverflowed = false;
    } else if (this.#gop.length === 0 || this.#gopOverflowed) return;
    if (this.#gopBytes + frame.data.length > this.#limits.gopCacheBytes) {
      // A late joiner must start on a keyframe; a partial GOP is useless, so keep none.
      this.#clearGop();
      this.#gopOverflowed = true;
      return;
    }
    frame.data.retain();
    this.#gop.push(frame);
    this.#gopBytes += frame.data.length;
  }

  #clearGop(): void {
    for (const f of this.#gop) f.data.release();
    this.#gop = [];
    this.#gopBytes = 0;
  }
}
