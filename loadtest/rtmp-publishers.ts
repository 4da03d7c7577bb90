/**
 * N RTMP publishers fed by one RtmpFeed. Each connects (ramped), waits for the next keyframe, sends
 * the clip's metadata and decoder configs once, then writes the feed's shared bytes every tick. A
 * publisher whose socket backs up past a limit skips ticks and rejoins at the next keyframe (counted:
 * the server is not reading fast enough). A publisher that fails reconnects only if asked to.
 */
import { RtmpClient, parseRtmpUrl, type RtmpTarget } from './rtmp-client.ts';
import type { FeedChunk, FeedSubscriber, RtmpFeed } from './replay.ts';
import { ramp } from './ramp.ts';

export type PublisherState = 'connecting' | 'waiting-keyframe' | 'live' | 'failed' | 'closed';

export interface PublisherStats {
  name: string;
  state: PublisherState;
  connectMs: number | undefined;
  bytesSent: number;
  skippedTicks: number;
  resyncs: number;
  error: string | undefined;
  /** When it failed after having been live (a drop, not a refused connect). */
  droppedAfterMs: number | undefined;
}

class Publisher implements FeedSubscriber {
  readonly name: string;
  readonly target: RtmpTarget;
  state: PublisherState = 'connecting';
  client: RtmpClient | undefined;
  connectMs: number | undefined;
  bytesSent = 0;
  skippedTicks = 0;
  resyncs = 0;
  error: string | undefined;
  liveSince = 0;
  droppedAfterMs: number | undefined;
  readonly #feed: RtmpFeed;
  readonly #maxBacklog: number;
  readonly #tap: ((name: string, bytes: Buffer) => void) | undefined;

  constructor(target: RtmpTarget, feed: RtmpFeed, maxBacklog: number, tap?: (name: string, bytes: Buffer) => void) {
    this.name = target.name;
    this.target = target;
    this.#feed = feed;
    this.#maxBacklog = maxBacklog;
    this.#tap = tap;
  }

  get streamId(): number {
    return this.client?.streamId ?? 1;
  }

  async connect(timeoutMs: number): Promise<void> {
    const t0 = performance.now();
    try {
      this.client = await RtmpClient.open(this.target, 'publish', { timeoutMs, chunkSize: this.#feed.chunkSize });
    } catch (err) {
      this.state = 'failed';
      this.error = (err as Error).message;
      return;
    }
    this.connectMs = performance.now() - t0;
    if (this.state !== 'connecting') {
      // Closed while connecting.
      this.client.destroy('closed');
      return;
    }
    this.state = 'waiting-keyframe';
    this.#feed.subscribe(this);
    void this.client.closed.then((reason) => {
      this.#feed.unsubscribe(this);
      if (this.state === 'closed') return;
      if (this.state === 'live') this.droppedAfterMs = performance.now() - this.liveSince;
      this.state = 'failed';
      this.error = reason;
    });
  }

  onTick(chunk: FeedChunk): void {
    const c = this.client!;
    if (this.state === 'live') {
      if (c.backlog > this.#maxBacklog) {
        // The server is not reading: skip, and rejoin at the next keyframe once it drains.
        this.skippedTicks++;
        this.resyncs++;
        this.state = 'waiting-keyframe';
        return;
      }
      c.write(chunk.bytes);
      this.#tap?.(this.name, chunk.bytes);
      this.bytesSent += chunk.bytes.length;
      return;
    }
    if (this.state !== 'waiting-keyframe') return;
    if (chunk.keyframeAt < 0) return;
    if (c.backlog > this.#maxBacklog) {
      this.skippedTicks++;
      return;
    }
    const tail = chunk.bytes.subarray(chunk.keyframeAt);
    // Decoder configs once per connection, then the shared bytes from the keyframe on.
    const first = this.liveSince === 0 ? Buffer.concat([this.#feed.header(this.streamId, chunk.keyframeTs), tail]) : tail;
    if (this.liveSince === 0) this.liveSince = performance.now();
    this.state = 'live';
    c.write(first);
    this.#tap?.(this.name, first);
    this.bytesSent += first.length;
  }

  async close(): Promise<void> {
    const was = this.state;
    this.state = 'closed';
    this.#feed.unsubscribe(this);
    if (was !== 'failed') await this.client?.close();
  }

  stats(): PublisherStats {
    return {
      name: this.name,
      state: this.state,
      connectMs: this.connectMs,
      bytesSent: this.bytesSent,
      skippedTicks: this.skippedTicks,
      resyncs: this.resyncs,
      error: this.error,
      droppedAfterMs: this.droppedAfterMs,
    };
  }
}

export interface RtmpPublishersOptions {
  /** rtmp://host:port/app */
  url: string;
  names: readonly string[];
  feed: RtmpFeed;
  /** Connections are spread over this long. */
  rampMs: number;
  connectTimeoutMs?: number;
  /** Bytes queued in a socket beyond which ticks are skipped. Default 2 MiB. */
  maxBacklog?: number;
  signal?: AbortSignal;
  /** Sees every byte written to each connection after publish start (tests decode it). */
  tap?: (name: string, bytes: Buffer) => void;
}

export class RtmpPublishers {
  readonly #pubs: Publisher[];
  readonly #opts: RtmpPublishersOptions;

  constructor(opts: RtmpPublishersOptions) {
    this.#opts = opts;
    this.#pubs = opts.names.map((n) => new Publisher(parseRtmpUrl(opts.url, n), opts.feed, opts.maxBacklog ?? 2 * 1024 * 1024, opts.tap));
  }

  /** Connects everyone, ramped; resolves when every attempt has finished (live or failed). */
  async start(): Promise<void> {
    await ramp(this.#pubs, this.#opts.rampMs, (p) => p.connect(this.#opts.connectTimeoutMs ?? 10_000), this.#opts.signal);
  }

  counts(): Record<PublisherState, number> {
    const c: Record<PublisherState, number> = { connecting: 0, 'waiting-keyframe': 0, live: 0, failed: 0, closed: 0 };
    for (const p of this.#pubs) c[p.state]++;
    return c;
  }

  bytesSent(): number {
    return this.#pubs.reduce((a, p) => a + p.bytesSent, 0);
  }

  stats(): PublisherStats[] {
    return this.#pubs.map((p) => p.stats());
  }

  async close(): Promise<void> {
    await Promise.all(this.#pubs.map((p) => p.close()));
  }
}
