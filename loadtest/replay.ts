/**
 * Replaying an FLV clip as RTMP in real time, looped with timestamps that keep increasing, for many
 * publishers at the cost of one: every tick the tags that came due are chunked once into one buffer
 * and that same buffer is written to every publisher (one write per connection per tick).
 */
import { encodeAmf0 } from '../codecs/amf0.ts';
import { FlvTagType, parseAudioTag, parseVideoTag, readFlvFile } from '../codecs/flv.ts';
import { MessageType, encodeMessage, type RtmpMessage } from '../codecs/rtmp/chunks.ts';
import { Csid } from '../codecs/rtmp/messages.ts';
import { TickFeed } from './tick-feed.ts';

export interface ClipTag {
  type: FlvTagType.Audio | FlvTagType.Video;
  /** Milliseconds from the clip's start. */
  ts: number;
  body: Buffer;
  /** A video keyframe: where a publisher may join. */
  keyframe: boolean;
}

/** An FLV file split into what a publisher sends once (metadata, decoder configs) and the media it loops. */
export class FlvClip {
  /** The `@setDataFrame onMetaData` payload, when the file has metadata. */
  readonly metadata: Buffer | undefined;
  readonly videoConfig: Buffer | undefined;
  readonly audioConfig: Buffer | undefined;
  readonly tags: readonly ClipTag[];
  /** The loop period: each loop's timestamps are the previous one's plus this. */
  readonly periodMs: number;
  readonly videoFrames: number;
  readonly audioFrames: number;
  /** Media bits per second of the clip (tag bodies). */
  readonly bitsPerSecond: number;

  constructor(file: Buffer) {
    let metadata: Buffer | undefined;
    let videoConfig: Buffer | undefined;
    let audioConfig: Buffer | undefined;
    const tags: ClipTag[] = [];
    for (const t of readFlvFile(file)) {
      if (t.type === FlvTagType.Script) {
        metadata ??= Buffer.concat([encodeAmf0('@setDataFrame'), t.body]);
      } else if (t.type === FlvTagType.Video) {
        const h = parseVideoTag(t.body);
        if (h.packetType === 'config') videoConfig ??= Buffer.from(t.body);
        else if (h.packetType === 'nalu' && h.frameType !== 5) tags.push({ type: FlvTagType.Video, ts: t.timestamp, body: Buffer.from(t.body), keyframe: h.frameType === 1 });
      } else if (t.type === FlvTagType.Audio) {
        const h = parseAudioTag(t.body);
        if (h.packetType === 'config') audioConfig ??= Buffer.from(t.body);
        else tags.push({ type: FlvTagType.Audio, ts: t.timestamp, body: Buffer.from(t.body), keyframe: false });
      }
    }
    const firstKey = tags.findIndex((t) => t.keyframe);
    if (firstKey < 0) throw new Error('the clip has no video keyframe');
    // Start on the first keyframe so every loop begins where a decoder can.
    const media = tags.slice(firstKey).sort((a, b) => a.ts - b.ts);
    const t0 = media[0]!.ts;
    for (const t of media) t.ts -= t0;
    const fitted = fitLoop(media);
    this.tags = fitted.tags;
    this.metadata = metadata;
    this.videoConfig = videoConfig;
    this.audioConfig = audioConfig;
    this.periodMs = fitted.periodMs;
    this.videoFrames = this.tags.filter((t) => t.type === FlvTagType.Video).length;
    this.audioFrames = this.tags.length - this.videoFrames;
    this.bitsPerSecond = (this.tags.reduce((a, t) => a + t.body.length, 0) * 8 * 1000) / this.periodMs;
  }
}

function typicalFrame(ts: readonly number[]): number {
  const deltas = ts
    .slice(1)
    .map((v, i) => v - ts[i]!)
    .filter((d) => d > 0)
    .sort((a, b) => a - b);
  return deltas[Math.floor(deltas.length / 2)] ?? 1;
}

/**
 * Fits the clip to a loop period set by the video: the last frame's timestamp plus the typical frame
 * duration, so the video cadence runs on unbroken across the loop point. Audio that would overlap the
 * next loop's first audio frame is dropped (at most a frame: the gap left is under one audio frame).
 * Every track's next-loop timestamps are then above its last ones.
 */
export function fitLoop(tags: readonly ClipTag[]): { tags: ClipTag[]; periodMs: number } {
  const video = tags.filter((t) => t.type === FlvTagType.Video).map((t) => t.ts);
  const audio = tags.filter((t) => t.type === FlvTagType.Audio).map((t) => t.ts);
  if (video.length === 0) {
    return { tags: [...tags], periodMs: audio.length ? audio[audio.length - 1]! + typicalFrame(audio) : 1 };
  }
  const periodMs = video[video.length - 1]! + typicalFrame(video);
  if (audio.length === 0) return { tags: [...tags], periodMs };
  const audioEnd = audio[0]! + periodMs - typicalFrame(audio);
  return { tags: tags.filter((t) => t.type !== FlvTagType.Audio || t.ts <= audioEnd), periodMs };
}

/** One due tag with its absolute (looped) RTMP timestamp. */
export interface DueTag {
  tag: ClipTag;
  timestamp: number;
}

/** The clip's tags on a looping timeline: `take(ms)` returns every tag due up to that media time. */
export class LoopSchedule {
  readonly #clip: FlvClip;
  #loop = 0;
  #index = 0;

  constructor(clip: FlvClip) {
    this.#clip = clip;
  }

  get loops(): number {
    return this.#loop;
  }

  /** Tags with timestamp <= untilMs, in order; bounded to `max` per call. */
  take(untilMs: number, max = 100_000): DueTag[] {
    const out: DueTag[] = [];
    const tags = this.#clip.tags;
    while (out.length < max) {
      const tag = tags[this.#index]!;
      const timestamp = this.#loop * this.#clip.periodMs + tag.ts;
      if (timestamp > untilMs) break;
      out.push({ tag, timestamp });
      if (++this.#index === tags.length) {
        this.#index = 0;
        this.#loop++;
      }
    }
    return out;
  }
}

export interface FeedChunk {
  /** The chunked RTMP messages due this tick, for publishers on `streamId`. */
  bytes: Buffer;
  /** Byte offset of the first video keyframe message in `bytes`, or -1. */
  keyframeAt: number;
  /** The RTMP timestamp of that keyframe (valid when keyframeAt >= 0). */
  keyframeTs: number;
}

export interface FeedSubscriber {
  readonly streamId: number;
  /** Called once per tick with the shared bytes; must not modify them. */
  onTick(chunk: FeedChunk): void;
}

export interface FeedOptions {
  tickMs?: number;
  chunkSize?: number;
  /** The feed stops by itself after this long. */
  maxMs: number;
}

/**
 * The shared clock: one timer for every publisher. Each tick encodes the due tags once per message
 * stream id in use (all servers here answer 1) and hands the same buffer to every subscriber.
 */
export class RtmpFeed extends TickFeed<FeedSubscriber> {
  readonly clip: FlvClip;
  readonly chunkSize: number;
  readonly #schedule: LoopSchedule;
  /** Bytes produced per subscriber and late ticks: for the report. */
  bytesPerSubscriber = 0;
  lateTicks = 0;

  constructor(clip: FlvClip, opts: FeedOptions) {
    super(opts.tickMs ?? 100, opts.maxMs);
    this.clip = clip;
    this.chunkSize = opts.chunkSize ?? 4096;
    this.#schedule = new LoopSchedule(clip);
  }

  get loops(): number {
    return this.#schedule.loops;
  }

  /** What a publisher sends once before joining at a keyframe: metadata and decoder configs. */
  header(streamId: number, timestamp: number): Buffer {
    const parts: Buffer[] = [];
    const c = this.clip;
    if (c.metadata) parts.push(encodeMessage(Csid.Data, { type: MessageType.DataAmf0, streamId, timestamp: 0, payload: c.metadata }, this.chunkSize));
    if (c.videoConfig) parts.push(encodeMessage(Csid.Video, { type: MessageType.Video, streamId, timestamp, payload: c.videoConfig }, this.chunkSize));
    if (c.audioConfig) parts.push(encodeMessage(Csid.Audio, { type: MessageType.Audio, streamId, timestamp, payload: c.audioConfig }, this.chunkSize));
    return Buffer.concat(parts);
  }

  protected override onTick(elapsed: number): void {
    if (elapsed > this.ticks * this.tickMs + this.tickMs) this.lateTicks++;
    const due = this.#schedule.take(elapsed);
    if (due.length > 0) {
      const byStream = new Map<number, FeedChunk>();
      for (const s of this.subs) {
        let chunk = byStream.get(s.streamId);
        if (!chunk) {
          chunk = encodeDue(due, s.streamId, this.chunkSize);
          byStream.set(s.streamId, chunk);
          this.bytesPerSubscriber += chunk.bytes.length;
        }
        s.onTick(chunk);
      }
    }
  }
}

/** Chunks the due tags for one message stream id into one buffer. */
export function encodeDue(due: readonly DueTag[], streamId: number, chunkSize: number): FeedChunk {
  const parts: Buffer[] = [];
  let size = 0;
  let keyframeAt = -1;
  let keyframeTs = 0;
  for (const { tag, timestamp } of due) {
    const video = tag.type === FlvTagType.Video;
    if (tag.keyframe && keyframeAt < 0) {
      keyframeAt = size;
      keyframeTs = timestamp;
    }
    const msg: RtmpMessage = { type: video ? MessageType.Video : MessageType.Audio, streamId, timestamp, payload: tag.body };
    const b = encodeMessage(video ? Csid.Video : Csid.Audio, msg, chunkSize);
    parts.push(b);
    size += b.length;
  }
  return { bytes: Buffer.concat(parts, size), keyframeAt, keyframeTs };
}
