/**
 * The HLS packager of one stream name: cuts the stream's frames into segments at keyframes, keeps
 * a window of them in pooled memory, and renders the playlist. It outlives a publisher by a
 * grace period (ENDLIST) so that a returning publisher continues the same playlist after a
 * DISCONTINUITY.
 */
import type { Logger } from 'pino';
import { writeMediaPlaylist, type Segment } from '../../codecs/m3u8.ts';
import type { Track } from '../../codecs/track.ts';
import type { Frame } from '../../sessions/frame.ts';
import type { OutputQueue } from '../../sessions/output-queue.ts';
import { PoolExhaustedError, type BufferPool, type PooledBuffer } from '../../sessions/pool.ts';
import { CodecError } from '../../codecs/errors.ts';
import type { Stream } from '../../sessions/stream.ts';
import { createSegmentWriter, type HlsFormat, type SegmentWriter } from './segments.ts';

export interface PackagerOptions {
  format: HlsFormat;
  targetDurationMs: number;
  windowSegments: number;
  graceMs: number;
  /** Told when this output had to drop what it was building (a reason for a metric). */
  onError?: (reason: string) => void;
}

/** A store that mirrors what is served (the disk writer); errors are its own to report. */
export interface SegmentSink {
  segment(name: string, data: Uint8Array): void;
  playlist(text: string): void;
  remove(name: string): void;
}

interface StoredSegment {
  readonly sequence: number;
  readonly name: string;
  readonly duration: number;
  readonly data: PooledBuffer;
  readonly discontinuity: boolean;
  readonly programDateTime: Date;
  readonly initName: string | undefined;
}

interface OpenSegment {
  readonly writer: SegmentWriter;
  readonly startDts: number;
  readonly startedAt: Date;
  readonly discontinuity: boolean;
  lastDts: number;
  frames: number;
}

/** Segments kept in memory past the playlist window, for players still reading an older playlist. */
const EXTRA_KEPT = 2;
/** How far before the first keyframe audio is still taken into the first segment (100 ms). */
const EARLY_AUDIO_TICKS = 9000;
const EARLY_AUDIO_FRAMES = 16;
const SUPPORTED: Record<HlsFormat, ReadonlySet<string>> = { ts: new Set(['h264', 'aac']), fmp4: new Set(['h264', 'hevc', 'aac', 'opus']) };

export class HlsPackager {
  readonly key: string;
  readonly #opts: PackagerOptions;
  readonly #pool: BufferPool;
  readonly #log: Logger;
  readonly #sink: SegmentSink | undefined;
  readonly #onGone: () => void;
  readonly #segments: StoredSegment[] = [];
  readonly #inits = new Map<string, Buffer>();
  #tracks = new Map<number, Track>();
  #hasVideo = false;
  #open: OpenSegment | undefined;
  #writer: SegmentWriter | undefined;
  #initName: string | undefined;
  #initCount = 0;
  #nextSequence = 0;
  #discontinuitySequence = 0;
  #pendingDiscontinuity = false;
  #maxDuration = 0;
  #frameDuration = 3000;
  #earlyAudio: Frame[] = [];
  #queue: OutputQueue | undefined;
  #stream: Stream | undefined;
  #ended = false;
  #grace: NodeJS.Timeout | undefined;
  #playlist: string | undefined;
  #closed = false;
  readonly #warned = new Set<string>();

  constructor(key: string, opts: PackagerOptions, pool: BufferPool, log: Logger, onGone: () => void, sink?: SegmentSink) {
    this.key = key;
    this.#opts = opts;
    this.#pool = pool;
    this.#log = log.child({ output: 'hls', stream: key });
    this.#onGone = onGone;
    this.#sink = sink;
  }

  get format(): HlsFormat {
    return this.#opts.format;
  }

  /** The media playlist, once it has a segment. */
  get playlist(): string | undefined {
    return this.#playlist;
  }

  get segmentCount(): number {
    return this.#segments.length;
  }

  segment(name: string): PooledBuffer | undefined {
    return this.#segments.find((s) => s.name === name)?.data;
  }

  init(name: string): Buffer | undefined {
    return this.#inits.get(name);
  }

  /** Starts reading a (new) publisher's stream; a returning publisher continues after a discontinuity. */
  attach(stream: Stream): void {
    if (this.#closed) return;
    this.#detach();
    if (this.#grace) clearTimeout(this.#grace);
    this.#grace = undefined;
    if (this.#segments.length || this.#open) this.#pendingDiscontinuity = true;
    this.#ended = false;
    this.#tracks = new Map();
    this.#hasVideo = false;
    this.#resetWriter();
    this.#stream = stream;
    const q = stream.attach();
    this.#queue = q;
    q.onReadable = () => this.#drain(q);
    this.#drain(q);
  }

  /** Releases every segment and frame held; the packager is gone. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#grace) clearTimeout(this.#grace);
    this.#detach();
    this.#resetWriter();
    for (const s of this.#segments.splice(0)) s.data.release();
    this.#inits.clear();
    this.#playlist = undefined;
  }

  #detach(): void {
    if (this.#queue && this.#stream) this.#stream.detach(this.#queue);
    this.#queue = undefined;
    this.#stream = undefined;
  }

  #resetWriter(): void {
    for (const f of this.#earlyAudio) f.data.release();
    this.#earlyAudio = [];
    this.#open?.writer.dispose();
    this.#open = undefined;
    this.#writer?.dispose();
    this.#writer = undefined;
  }

  #drain(q: OutputQueue): void {
    if (q !== this.#queue) return;
    for (let ev = q.shift(); ev; ev = q.shift()) {
      try {
        if (ev.type === 'frame') this.#onFrame(ev.frame);
        else if (ev.type === 'track') this.#onTrack(ev.track);
      } catch (err) {
        this.#fail(err);
      } finally {
        if (ev.type === 'frame') ev.frame.data.release();
      }
    }
    const ended = q.ended;
    if (ended !== undefined) this.#onEnd(ended);
  }

  #onTrack(track: Track): void {
    if (!SUPPORTED[this.#opts.format].has(track.codec)) {
      const note = `${track.codec} cannot be carried in ${this.#opts.format} HLS: this output carries the other tracks only`;
      this.#stream?.notes.set('hls', note);
      this.#warnOnce(`codec-${track.codec}`, note);
      return;
    }
    const old = this.#tracks.get(track.id);
    this.#tracks.set(track.id, track);
    if (track.kind === 'video') this.#hasVideo = true;
    if (!this.#writer) return;
    if (old && old.codec === track.codec && old.config.equals(track.config)) return;
    // A codec, resolution or track-set change: close what we have and start over after a discontinuity.
    this.#closeSegment(undefined);
    this.#resetWriter();
    this.#pendingDiscontinuity = true;
  }

  #onFrame(frame: Frame): void {
    if (!this.#tracks.has(frame.track)) return;
    const hasVideo = this.#hasVideo;
    const boundary = hasVideo ? frame.kind === 'video' && frame.keyframe : frame.kind === 'audio';
    if (frame.discontinuity && this.#open) {
      this.#closeSegment(undefined);
      this.#pendingDiscontinuity = true;
    }
    if (!this.#open) {
      // A segment starts on a keyframe; before the first one there is nothing a player could decode.
      if (!boundary && !frame.discontinuity) {
        if (frame.kind === 'audio') this.#holdEarlyAudio(frame);
        return;
      }
      this.#openSegment(frame);
      this.#addEarlyAudio(this.#open!, frame.dts);
    } else if (boundary && frame.dts - this.#open.startDts >= this.#opts.targetDurationMs * 90) {
      try {
        this.#closeSegment(frame.dts);
      } catch (err) {
        // The closed segment is lost; this keyframe still starts the next one.
        this.#fail(err);
      }
      this.#openSegment(frame);
    }
    const open = this.#open!;
    if (frame.kind === 'video' && frame.dts > open.lastDts && open.frames > 0) this.#frameDuration = frame.dts - open.lastDts;
    if (frame.kind === 'video' || !hasVideo) open.lastDts = Math.max(open.lastDts, frame.dts);
    open.frames++;
    open.writer.add(frame);
  }

  /** Audio that comes just before the first keyframe belongs to the first segment. */
  #holdEarlyAudio(frame: Frame): void {
    frame.data.retain();
    this.#earlyAudio.push(frame);
    if (this.#earlyAudio.length > EARLY_AUDIO_FRAMES) this.#earlyAudio.shift()!.data.release();
  }

  #addEarlyAudio(open: OpenSegment, keyDts: number): void {
    for (const f of this.#earlyAudio) {
      if (f.dts >= keyDts - EARLY_AUDIO_TICKS) {
        open.frames++;
        open.writer.add(f);
      }
      f.data.release();
    }
    this.#earlyAudio = [];
  }

  #openSegment(frame: Frame): void {
    if (!this.#writer) {
      const tracks = [...this.#tracks.values()].sort((a, b) => a.id - b.id);
      this.#writer = createSegmentWriter(this.#opts.format, tracks);
      if (this.#writer.init) {
        this.#initName = `init-${this.#initCount++}.mp4`;
        this.#inits.set(this.#initName, this.#writer.init);
        this.#sink?.segment(this.#initName, this.#writer.init);
      }
    }
    this.#open = {
      writer: this.#writer,
      startDts: frame.dts,
      startedAt: new Date(),
      discontinuity: this.#pendingDiscontinuity,
      lastDts: frame.dts,
      frames: 0,
    };
    this.#pendingDiscontinuity = false;
  }

  /** Closes the open segment; `nextDts` is where the next one starts (undefined at an end or a break). */
  #closeSegment(nextDts: number | undefined): void {
    const open = this.#open;
    this.#open = undefined;
    if (!open || open.frames === 0) return;
    const endDts = nextDts ?? open.lastDts + this.#frameDuration;
    const sequence = this.#nextSequence;
    const pieces = open.writer.finish(sequence, nextDts);
    // Taken before the number is used, so a segment the pool cannot hold leaves no gap in the numbering.
    const data = this.#pool.copyOf(...pieces);
    this.#nextSequence++;
    const name = `seg-${sequence}.${open.writer.extension}`;
    const seg: StoredSegment = {
      sequence,
      name,
      duration: Math.max(0.001, (endDts - open.startDts) / 90_000),
      data,
      discontinuity: open.discontinuity,
      programDateTime: open.startedAt,
      initName: this.#initName,
    };
    this.#segments.push(seg);
    // Each new segment pushes exactly one out of the listed window; its discontinuity is then
    // counted in DISCONTINUITY-SEQUENCE.
    if (this.#segments[this.#segments.length - this.#opts.windowSegments - 1]?.discontinuity) this.#discontinuitySequence++;
    this.#maxDuration = Math.max(this.#maxDuration, seg.duration);
    this.#sink?.segment(name, data.bytes);
    while (this.#segments.length > this.#opts.windowSegments + EXTRA_KEPT) {
      const old = this.#segments.shift()!;
      old.data.release();
      this.#sink?.remove(old.name);
      if (old.initName && !this.#segments.some((s) => s.initName === old.initName)) this.#inits.delete(old.initName);
    }
    this.#render();
  }

  #onEnd(reason: string): void {
    // Runs from Stream.end(), which socket close handlers call: nothing may escape from here.
    try {
      this.#closeSegment(undefined);
    } catch (err) {
      this.#fail(err);
    }
    this.#resetWriter();
    this.#detach();
    this.#ended = true;
    this.#render();
    this.#log.info({ reason, segments: this.#nextSequence }, 'HLS playlist ended; kept for the grace period');
    this.#grace = setTimeout(() => {
      this.close();
      this.#onGone();
    }, this.#opts.graceMs);
  }

  #render(): void {
    const listed = this.#segments.slice(-this.#opts.windowSegments);
    const first = listed[0];
    if (!first) return;
    const segments: Segment[] = listed.map((s) => ({
      uri: s.name,
      duration: s.duration,
      sequence: s.sequence,
      discontinuity: s.discontinuity,
      programDateTime: s.programDateTime,
      ...(s.initName ? { map: { uri: s.initName } } : {}),
    }));
    const text = writeMediaPlaylist({
      version: this.#opts.format === 'fmp4' ? 7 : 3,
      targetDuration: Math.max(1, Math.ceil(this.#maxDuration)),
      mediaSequence: first.sequence,
      discontinuitySequence: this.#discontinuitySequence,
      segments,
      endList: this.#ended,
      independentSegments: true,
    });
    this.#playlist = text;
    this.#sink?.playlist(text);
  }

  /**
   * Something this output could not do (the pool is full, a muxer refused a frame): the segment
   * being built is dropped and the next one starts after a discontinuity. The publisher and other
   * outputs never see the error.
   */
  #fail(err: unknown): void {
    const reason = err instanceof PoolExhaustedError ? 'pool_exhausted' : err instanceof CodecError ? `codec_${err.format}` : 'internal';
    this.#opts.onError?.(reason);
    this.#warnOnce(`error-${reason}`, `HLS output dropped its current segment: ${(err as Error).message}`);
    this.#resetWriter();
    this.#pendingDiscontinuity = true;
  }

  #warnOnce(key: string, msg: string): void {
    if (this.#warned.has(key)) return;
    this.#warned.add(key);
    this.#log.warn(msg);
  }
}
