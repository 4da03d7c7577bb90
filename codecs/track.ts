/**
 * Track descriptions and the timed-sample shape shared by parsers and muxers.
 * Time is an integer count of a 90 kHz clock.
 */

export type VideoCodec = 'h264' | 'hevc';
export type AudioCodec = 'aac' | 'opus';
export type Codec = VideoCodec | AudioCodec;

export const CLOCK_RATE = 90_000;

export interface VideoTrack {
  readonly kind: 'video';
  readonly id: number;
  readonly codec: VideoCodec;
  /** The decoder configuration record: avcC for H.264, hvcC for HEVC. */
  readonly config: Buffer;
  readonly width: number;
  readonly height: number;
  /** RFC 6381 codec string, e.g. avc1.64001f. */
  readonly codecString: string;
}

export interface AudioTrack {
  readonly kind: 'audio';
  readonly id: number;
  readonly codec: AudioCodec;
  /** AudioSpecificConfig for AAC; the OpusHead (RFC 7845 ID header) for Opus. */
  readonly config: Buffer;
  readonly sampleRate: number;
  readonly channels: number;
  readonly codecString: string;
}

export type Track = VideoTrack | AudioTrack;

/**
 * One access unit of one track, as muxers see it. H.264/HEVC bytes are length-prefixed NAL units
 * (4-byte lengths); AAC is a raw access unit; Opus is one packet.
 */
export interface Sample {
  readonly track: number;
  readonly dts: number;
  readonly pts: number;
  /** A random access point: an IDR for video; always true for audio. */
  readonly keyframe: boolean;
  readonly data: Uint8Array;
}
