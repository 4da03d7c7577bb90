/**
 * Turns the media messages of one RTMP publish (FLV tag bodies) into track configs and frames
 * on a Stream. Used by the RTMP server (push) and the RTMP client (pull).
 */
import { aacCodecString, parseAudioSpecificConfig } from '../../codecs/aac.ts';
import type { AmfValue } from '../../codecs/amf0.ts';
import { CodecError } from '../../codecs/errors.ts';
import { parseAudioTag, parseVideoTag } from '../../codecs/flv.ts';
import { avcCodecString, isIdr, parseAvcC, parseSps, toLengthSize4 } from '../../codecs/h264.ts';
import { StreamClock, Unwrapper, rtmpMsTo90k } from '../../codecs/timestamps.ts';
import type { BufferPool } from '../../sessions/pool.ts';
import type { Stream } from '../../sessions/stream.ts';

export const VIDEO_TRACK = 1;
export const AUDIO_TRACK = 2;

const FLV_AVC = 7;
const FLV_AAC = 10;

export interface RtmpIngestOptions {
  /** Added to every DTS and PTS (90 kHz): a pull that reconnects continues the timeline of its last publication. */
  baseDts?: number;
}

export class RtmpIngest {
  readonly #stream: Stream;
  readonly #pool: BufferPool;
  readonly #clock = new StreamClock();
  readonly #videoTime = new Unwrapper(32);
  readonly #audioTime = new Unwrapper(32);
  #nalLengthSize = 4;
  #videoReady = false;
  #audioReady = false;
  readonly #base: number;
  #lastDts: number | undefined;

  constructor(stream: Stream, pool: BufferPool, opts: RtmpIngestOptions = {}) {
    this.#stream = stream;
    this.#pool = pool;
    this.#base = opts.baseDts ?? 0;
  }

  /** The highest DTS pushed so far (base included), if any. */
  get lastDts(): number | undefined {
    return this.#lastDts;
  }

  #stamp(track: number, dts: number, pts: number): { dts: number; pts: number; discontinuity: boolean } {
    const t = this.#clock.stamp(track, dts, pts);
    const out = { dts: t.dts + this.#base, pts: t.pts + this.#base, discontinuity: t.discontinuity };
    if (this.#lastDts === undefined || out.dts > this.#lastDts) this.#lastDts = out.dts;
    return out;
  }

  /** `@setDataFrame onMetaData {...}` or a bare `onMetaData {...}`. */
  metadata(values: readonly AmfValue[]): void {
    const i = values[0] === '@setDataFrame' ? 1 : 0;
    if (values[i] !== 'onMetaData') return;
    const obj = values[i + 1];
    if (obj && typeof obj === 'object' && !Array.isArray(obj) && !(obj instanceof Date)) this.#stream.setMetadata(obj);
  }

  /** One video message. Throws CodecError for malformed data. */
  video(body: Buffer, timestampMs: number): void {
    const h = parseVideoTag(body);
    if (h.frameType === 5) return;
    if (h.codecId !== FLV_AVC) throw new CodecError('flv', `video codec id ${h.codecId} is not supported (H.264 only)`);
    const payload = body.subarray(h.payloadOffset);
    if (h.packetType === 'eos') return;
    if (h.packetType === 'config') {
      const avc = parseAvcC(payload);
      const spsNal = avc.sps[0];
      if (!spsNal) throw new CodecError('h264', 'avcC without an SPS');
      const sps = parseSps(spsNal);
      this.#nalLengthSize = avc.nalLengthSize;
      this.#videoReady = true;
      this.#stream.setTrack({
        kind: 'video',
        id: VIDEO_TRACK,
        codec: 'h264',
        config: Buffer.from(payload),
        width: sps.width,
        height: sps.height,
        codecString: avcCodecString(sps),
      });
      return;
    }
    if (!this.#videoReady || payload.length === 0) return;
    const data = toLengthSize4(payload, this.#nalLengthSize);
    const dts = rtmpMsTo90k(this.#videoTime.unwrap(timestampMs));
    const pts = dts + rtmpMsTo90k(h.compositionTime);
    const keyframe = h.frameType === 1 && isIdr(data, 4);
    const t = this.#stamp(VIDEO_TRACK, dts, pts);
    this.#stream.push({
      track: VIDEO_TRACK,
      kind: 'video',
      codec: 'h264',
      dts: t.dts,
      pts: t.pts,
      keyframe,
      discontinuity: t.discontinuity,
      data: this.#pool.copyOf(data),
    });
  }

  /** One audio message. Throws CodecError for malformed data. */
  audio(body: Buffer, timestampMs: number): void {
    const h = parseAudioTag(body);
    if (h.soundFormat !== FLV_AAC) throw new CodecError('flv', `audio format ${h.soundFormat} is not supported (AAC only)`);
    const payload = body.subarray(h.payloadOffset);
    if (h.packetType === 'config') {
      const asc = parseAudioSpecificConfig(payload);
      this.#audioReady = true;
      this.#stream.setTrack({
        kind: 'audio',
        id: AUDIO_TRACK,
        codec: 'aac',
        config: Buffer.from(payload),
        sampleRate: asc.sampleRate,
        channels: asc.channels,
        codecString: aacCodecString(asc),
      });
      return;
    }
    if (!this.#audioReady || payload.length === 0) return;
    const dts = rtmpMsTo90k(this.#audioTime.unwrap(timestampMs));
    const t = this.#stamp(AUDIO_TRACK, dts, dts);
    this.#stream.push({
      track: AUDIO_TRACK,
      kind: 'audio',
      codec: 'aac',
      dts: t.dts,
      pts: t.pts,
      keyframe: true,
      discontinuity: t.discontinuity,
      data: this.#pool.copyOf(payload),
    });
  }
}
