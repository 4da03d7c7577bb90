/**
 * Turns the media messages of one RTMP publish (FLV tag bodies) into track configs and frames
 * on a Stream. Used by the RTMP server (push) and the RTMP client (pull).
 */
import { aacCodecString, parseAudioSpecificConfig } from '../../codecs/aac.ts';
import type { AmfValue } from '../../codecs/amf0.ts';
import { CodecError } from '../../codecs/errors.ts';
import { parseAudioTag, parseVideoTag } from '../../codecs/flv.ts';
import { NalType, avcCodecString, buildAvcC, isIdr, nalUnits, parseAvcC, parseSps, toLengthSize4 } from '../../codecs/h264.ts';
import { StreamClock, Unwrapper, rtmpMsTo90k } from '../../codecs/timestamps.ts';
import { AUDIO_TRACK_ID as AUDIO_TRACK, VIDEO_TRACK_ID as VIDEO_TRACK } from '../../sessions/frame.ts';
import type { BufferPool } from '../../sessions/pool.ts';
import type { Stream } from '../../sessions/stream.ts';


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
  #videoConfig: { sps: Buffer[]; pps: Buffer[] } | undefined;
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
      // ffmpeg sends an empty sequence header when the encoder's config is not known yet (its tee
      // muxer always does) and the real one with the first frame: wait for that.
      if (payload.length === 0) return;
      const avc = parseAvcC(payload);
      this.#nalLengthSize = avc.nalLengthSize;
      this.#setVideoConfig(avc.sps, avc.pps, Buffer.from(payload));
      return;
    }
    if (payload.length === 0) return;
    const data = toLengthSize4(payload, this.#nalLengthSize);
    // Parameter sets come with keyframes; scanning every frame would walk each one's NAL units.
    if (h.frameType === 1 || !this.#videoReady) this.#inBandParameterSets(data);
    if (!this.#videoReady) return;
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

  /**
   * Encoders without a global header (ffmpeg's tee muxer, some hardware encoders) send SPS and PPS
   * only inside keyframes: the track config comes from them, and changes when they do.
   */
  #inBandParameterSets(data: Uint8Array): void {
    let sps: Buffer[] | undefined;
    let pps: Buffer[] | undefined;
    for (const nal of nalUnits(data, 4)) {
      const type = nal[0]! & 0x1f;
      if (type === NalType.SPS) (sps ??= []).push(nal);
      else if (type === NalType.PPS) (pps ??= []).push(nal);
    }
    if (!sps || !pps) return;
    const current = this.#videoConfig;
    if (current && current.sps.length === sps.length && current.sps.every((s, i) => s.equals(sps[i]!)) && current.pps.length === pps.length && current.pps.every((p, i) => p.equals(pps[i]!))) {
      return;
    }
    this.#setVideoConfig(sps, pps, buildAvcC(sps, pps));
  }

  #setVideoConfig(sps: readonly Buffer[], pps: readonly Buffer[], record: Buffer): void {
    const spsNal = sps[0];
    if (!spsNal) throw new CodecError('h264', 'avcC without an SPS');
    const info = parseSps(spsNal);
    this.#videoConfig = { sps: sps.map((b) => Buffer.from(b)), pps: pps.map((b) => Buffer.from(b)) };
    this.#videoReady = true;
    this.#stream.setTrack({
      kind: 'video',
      id: VIDEO_TRACK,
      codec: 'h264',
      config: record,
      width: info.width,
      height: info.height,
      codecString: avcCodecString(info),
    });
  }

  /** One audio message. Throws CodecError for malformed data. */
  audio(body: Buffer, timestampMs: number): void {
    const h = parseAudioTag(body);
    if (h.soundFormat !== FLV_AAC) throw new CodecError('flv', `audio format ${h.soundFormat} is not supported (AAC only)`);
    const payload = body.subarray(h.payloadOffset);
    if (h.packetType === 'config') {
      if (payload.length === 0) return;
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
