/**
 * One RTMP output of a stream (a player, or a re-push destination): it reads the stream through its own
 * bounded OutputQueue and writes RTMP messages to one connection, and stops reading while that
 * connection's socket buffer is full. What does not fit meanwhile stays in the queue, which skips to the
 * next keyframe when it overflows (LESSONS 12): memory stays bounded and the publisher never waits.
 *
 * Frames go back to FLV tag bodies: track configs become sequence headers (avcC as the AVC sequence
 * header, the AudioSpecificConfig as the AAC one), H.264 frames keep their AVCC bytes (4-byte lengths)
 * behind the 5-byte AVC header with composition time (pts - dts) / 90, and timestamps go from 90 kHz to
 * milliseconds. RTMP carries one H.264 and one AAC track; other codecs are left out, said once in the log.
 */
import type { Logger } from 'pino';
import type { AmfObject, AmfValue } from '../../codecs/amf0.ts';
import { FlvTagType, audioTagHeader, videoTagHeader } from '../../codecs/flv.ts';
import type { RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { Csid, dataMessage } from '../../codecs/rtmp/messages.ts';
import type { Frame, Track } from '../../sessions/frame.ts';
import type { OutputQueue, OutputQueueOptions, StreamEvent } from '../../sessions/output-queue.ts';
import type { Stream } from '../../sessions/stream.ts';

/** Where an egress writes: one RTMP connection. */
export interface EgressSink {
  /** The message stream id media messages carry on this connection. */
  readonly streamId: number;
  /** Encodes and writes one message; false when the socket buffer is full. */
  send(csid: number, msg: RtmpMessage): boolean;
  /** Calls `fn` once the socket buffer has drained; returns a canceller. */
  onDrain(fn: () => void): () => void;
}

export interface EgressOptions {
  log: Logger;
  /** 'publish' sends metadata as `@setDataFrame onMetaData` (what a server stores); 'play' as `onMetaData`. */
  role: 'play' | 'publish';
  queue?: Partial<OutputQueueOptions>;
  /** Counts frames written, for a metric. */
  onFrame?(): void;
  /** Called once, when the stream has ended and everything queued was written, or when writing failed. */
  onEnd(reason: string, error?: unknown): void;
}

const CT_MIN = -0x800000;
const CT_MAX = 0x7fffff;
const FLV_AVC = 7;

/** The AVC sequence header: our frames carry 4-byte NAL lengths, so the avcC must say so. */
export function avcSequenceHeader(avcC: Buffer): Buffer {
  const record = Buffer.from(avcC);
  if (record.length > 4) record[4] = (record[4]! & 0xfc) | 3;
  return Buffer.concat([videoTagHeader({ keyframe: true, codecId: FLV_AVC, packetType: 'config', compositionTime: 0 }), record]);
}

export function aacSequenceHeader(asc: Buffer): Buffer {
  return Buffer.concat([audioTagHeader({ packetType: 'config' }), asc]);
}

/** 90 kHz to RTMP milliseconds, and the composition time that keeps the player's PTS at round(pts / 90). */
export function rtmpTimes(dts: number, pts: number): { timestamp: number; compositionTime: number } {
  const timestamp = Math.round(dts / 90);
  const ct = Math.round(pts / 90) - timestamp;
  return { timestamp, compositionTime: Math.min(CT_MAX, Math.max(CT_MIN, ct)) };
}

export class RtmpEgress {
  readonly #stream: Stream;
  readonly #sink: EgressSink;
  readonly #opts: EgressOptions;
  #queue: OutputQueue | undefined;
  #cancelDrain: (() => void) | undefined;
  #videoTrack: number | undefined;
  #audioTrack: number | undefined;
  #lastTimestamp = 0;
  #frames = 0;
  #ended = false;
  #closed = false;
  readonly #warned = new Set<string>();

  constructor(stream: Stream, sink: EgressSink, opts: EgressOptions) {
    this.#stream = stream;
    this.#sink = sink;
    this.#opts = opts;
  }

  get framesOut(): number {
    return this.#frames;
  }

  /** Frames this output skipped because it fell behind. */
  get dropped(): number {
    return this.#queue?.dropped ?? 0;
  }

  /** Bytes of frames waiting in this output's queue. */
  get queuedBytes(): number {
    return this.#queue?.bytes ?? 0;
  }

  /** Attaches to the stream (metadata, tracks, the frames since the last keyframe, then live) and writes. */
  start(): void {
    if (this.#queue || this.#closed) return;
    const q = this.#stream.attach(this.#opts.queue);
    this.#queue = q;
    q.onReadable = () => this.#drain();
    this.#drain();
  }

  /** Detaches: releases every frame still queued and stops waiting for the socket. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelDrain?.();
    this.#cancelDrain = undefined;
    const q = this.#queue;
    this.#queue = undefined;
    if (q) {
      q.onReadable = undefined;
      this.#stream.detach(q);
    }
  }

  #drain(): void {
    const q = this.#queue;
    if (!q || this.#closed || this.#cancelDrain) return;
    try {
      for (let ev = q.shift(); ev; ev = q.shift()) {
        const flushed = this.#write(ev);
        if (this.#closed) return;
        if (!flushed) {
          // The socket is full: the queue holds (and bounds) what comes meanwhile.
          this.#cancelDrain = this.#sink.onDrain(() => {
            this.#cancelDrain = undefined;
            this.#drain();
          });
          return;
        }
      }
      const ended = q.ended;
      if (ended !== undefined) this.#end(ended);
    } catch (err) {
      // Never let an output's failure reach the publisher whose push() called us.
      this.#end(`output failed: ${(err as Error).message}`, err);
    }
  }

  #end(reason: string, error?: unknown): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#opts.onEnd(reason, error);
  }

  /** Writes one event; returns whether the socket took it without filling up. */
  #write(ev: StreamEvent): boolean {
    switch (ev.type) {
      case 'frame':
        try {
          return this.#frame(ev.frame);
        } finally {
          ev.frame.data.release();
        }
      case 'track':
        return this.#track(ev.track);
      case 'metadata':
        return this.#metadata(ev.metadata);
    }
  }

  #track(track: Track): boolean {
    if (track.kind === 'video') {
      if (track.codec !== 'h264') return this.#skip(`codec-${track.codec}`, `${track.codec} video is not carried over RTMP here (H.264 only)`);
      if (this.#videoTrack !== undefined && this.#videoTrack !== track.id) return this.#skip('video-2', 'a second video track is left out');
      this.#videoTrack = track.id;
      return this.#sink.send(Csid.Video, this.#media(FlvTagType.Video, this.#lastTimestamp, avcSequenceHeader(track.config)));
    }
    if (track.codec !== 'aac') return this.#skip(`codec-${track.codec}`, `${track.codec} audio is not carried over RTMP here (AAC only)`);
    if (this.#audioTrack !== undefined && this.#audioTrack !== track.id) return this.#skip('audio-2', 'a second audio track is left out');
    this.#audioTrack = track.id;
    return this.#sink.send(Csid.Audio, this.#media(FlvTagType.Audio, this.#lastTimestamp, aacSequenceHeader(track.config)));
  }

  #metadata(metadata: Readonly<Record<string, unknown>>): boolean {
    const obj = metadata as AmfObject;
    const values: AmfValue[] = this.#opts.role === 'publish' ? ['@setDataFrame', 'onMetaData', obj] : ['onMetaData', obj];
    return this.#sink.send(Csid.Data, dataMessage(this.#sink.streamId, this.#lastTimestamp, ...values));
  }

  #frame(frame: Frame): boolean {
    const isVideo = frame.track === this.#videoTrack;
    if (!isVideo && frame.track !== this.#audioTrack) return true;
    const { timestamp, compositionTime } = rtmpTimes(frame.dts, frame.pts);
    this.#lastTimestamp = timestamp;
    this.#frames++;
    this.#opts.onFrame?.();
    if (isVideo) {
      const header = videoTagHeader({ keyframe: frame.keyframe, codecId: FLV_AVC, packetType: 'nalu', compositionTime });
      return this.#sink.send(Csid.Video, this.#media(FlvTagType.Video, timestamp, Buffer.concat([header, frame.data.bytes])));
    }
    return this.#sink.send(Csid.Audio, this.#media(FlvTagType.Audio, timestamp, Buffer.concat([audioTagHeader({ packetType: 'raw' }), frame.data.bytes])));
  }

  #media(type: number, timestamp: number, payload: Buffer): RtmpMessage {
    return { type, streamId: this.#sink.streamId, timestamp, payload };
  }

  #skip(key: string, msg: string): boolean {
    if (!this.#warned.has(key)) {
      this.#warned.add(key);
      this.#opts.log.warn({ stream: this.#stream.key }, msg);
    }
    return true;
  }
}
