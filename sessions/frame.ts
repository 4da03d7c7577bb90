/**
 * The common shape every ingest produces and every output consumes: a timed access unit whose
 * bytes sit in a pooled, reference-counted buffer.
 */
import type { Codec } from '../codecs/track.ts';
import type { PooledBuffer } from './pool.ts';

export type { AudioCodec, AudioTrack, Codec, Track, VideoCodec, VideoTrack } from '../codecs/track.ts';
export { CLOCK_RATE } from '../codecs/track.ts';

/** Track ids every ingest uses, so that outputs (MP4 track_ID, TS PIDs) see the same layout. */
export const VIDEO_TRACK_ID = 1;
export const AUDIO_TRACK_ID = 2;

/**
 * One access unit of one track. H.264/HEVC data is length-prefixed NAL units (4-byte lengths);
 * AAC data is a raw access unit; Opus data is one packet. DTS and PTS are on the 90 kHz clock,
 * DTS monotonic per track, PTS >= DTS.
 * The frame owns one reference to `data` until it is handed on; whoever keeps it retains it.
 */
export interface Frame {
  readonly track: number;
  readonly kind: 'video' | 'audio';
  readonly codec: Codec;
  readonly dts: number;
  readonly pts: number;
  /** A random access point: an IDR (video); always true for audio. */
  readonly keyframe: boolean;
  /** The publisher's timeline jumped before this frame and was rebased: outputs mark a discontinuity. */
  readonly discontinuity?: boolean;
  readonly data: PooledBuffer;
}
