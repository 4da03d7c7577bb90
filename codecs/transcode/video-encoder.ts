/**
 * H.264 encoding of one rendition: libx264 on the CPU backend, h264_nvenc on CUDA surfaces on the GPU
 * backend. Output is what a Stream carries: AVCC access units (4-byte lengths) with SPS and PPS in
 * front of every IDR, the avcC record as the track config, times on the 90 kHz clock (no B-frames,
 * so DTS = PTS). Keyframes are placed where the caller forces them (the source's keyframes) and at
 * most `gopFrames` apart, with scene-cut detection off, so that every rendition of a source cuts its
 * GOPs on the same frames and HLS variants switch cleanly.
 */
import type { CodecContext, Packet } from 'node-av/lib';
import { NalType, annexBToAvcc, avcCodecString, buildAvcC, nalUnits, parseAvcC, parseSps, splitAnnexB } from '../h264.ts';
import { TranscodeError, avErrorText, check } from './errors.ts';
import type { FramePool, PooledFrame } from './frame-pool.ts';
import type { NodeAv } from './native.ts';

export interface VideoEncoderOptions {
  width: number;
  height: number;
  /** Target bitrate, bits per second. */
  bitrate: number;
  /** Nominal frame rate, for rate control and the GOP length. */
  fps: number;
  /** Longest GOP in frames when the source has no keyframe sooner. */
  gopFrames: number;
  /** libx264 preset (CPU backend). */
  preset: string;
  /** libx264 threads (CPU backend). */
  threads: number;
}

export interface EncodedVideo {
  readonly data: Buffer;
  readonly dts: number;
  readonly pts: number;
  readonly keyframe: boolean;
}

export interface EncodedVideoTrack {
  readonly config: Buffer;
  readonly width: number;
  readonly height: number;
  readonly codecString: string;
}

interface Open {
  readonly ctx: CodecContext;
  readonly packet: Packet;
  readonly sps: Buffer[];
  readonly pps: Buffer[];
  readonly track: EncodedVideoTrack;
}

/** SPS and PPS from an encoder's extradata: Annex B (libx264, NVENC) or an avcC record. */
function parameterSets(extradata: Buffer): { sps: Buffer[]; pps: Buffer[] } {
  if (extradata[0] === 1) {
    const avc = parseAvcC(extradata);
    return { sps: avc.sps, pps: avc.pps };
  }
  const sps: Buffer[] = [];
  const pps: Buffer[] = [];
  for (const nal of splitAnnexB(extradata)) {
    const type = nal[0]! & 0x1f;
    if (type === NalType.SPS) sps.push(Buffer.from(nal));
    else if (type === NalType.PPS) pps.push(Buffer.from(nal));
  }
  return { sps, pps };
}

export class VideoEncoder {
  readonly opts: Readonly<VideoEncoderOptions>;
  readonly #av: NodeAv;
  readonly #pool: FramePool;
  #open: Open | undefined;
  #closed = false;
  #lastPts = -Infinity;
  #frames = 0;
  #packets = 0;
  #dropped = 0;

  constructor(av: NodeAv, pool: FramePool, opts: VideoEncoderOptions) {
    this.#av = av;
    this.#pool = pool;
    this.opts = opts;
  }

  /** The track config, once the encoder is open (on the first frame). */
  get track(): EncodedVideoTrack | undefined {
    return this.#open?.track;
  }

  get framesIn(): number {
    return this.#frames;
  }

  get packetsOut(): number {
    return this.#packets;
  }

  /** Frames refused because their time did not move forward. */
  get framesDropped(): number {
    return this.#dropped;
  }

  /**
   * Encodes one picture of this rendition's size at `pts` (90 kHz). `onOpen` is told the track config
   * when the first picture opens the encoder; each packet that comes out goes to `out`.
   */
  encode(pic: PooledFrame, pts: number, forceKey: boolean, out: (p: EncodedVideo) => void, onOpen?: (t: EncodedVideoTrack) => void): void {
    if (this.#closed) throw new TranscodeError('encode', 'encode after close');
    if (pts <= this.#lastPts) {
      this.#dropped++;
      return;
    }
    const f = pic.frame;
    if (f.width !== this.opts.width || f.height !== this.opts.height) {
      throw new TranscodeError('encode', `picture of ${f.width}x${f.height} for an encoder of ${this.opts.width}x${this.opts.height}`);
    }
    let open = this.#open;
    if (!open) {
      open = this.#open = this.#openEncoder(pic);
      onOpen?.(open.track);
    }
    this.#lastPts = pts;
    const { c } = this.#av;
    f.pts = BigInt(pts);
    f.pictType = forceKey ? c.AV_PICTURE_TYPE_I : c.AV_PICTURE_TYPE_NONE;
    const ret = open.ctx.sendFrameSync(f);
    check(this.#av, ret, 'encode', 'sending a frame');
    this.#frames++;
    this.#receive(open, out);
  }

  /** Drains the encoder at the end of the stream; it cannot take frames after this. */
  flush(out: (p: EncodedVideo) => void): void {
    const open = this.#open;
    if (!open || this.#closed) return;
    const ret = open.ctx.sendFrameSync(null);
    if (ret < 0 && ret !== this.#av.c.AVERROR_EOF) check(this.#av, ret, 'encode', 'flushing');
    this.#receive(open, out);
  }

  #receive(open: Open, out: (p: EncodedVideo) => void): void {
    const { c } = this.#av;
    const p = open.packet;
    for (;;) {
      const ret = open.ctx.receivePacketSync(p);
      if (ret === c.AVERROR_EAGAIN || ret === c.AVERROR_EOF) return;
      check(this.#av, ret, 'encode', 'receiving a packet');
      try {
        const data = p.data;
        if (!data || data.length === 0) continue;
        const keyframe = p.isKeyframe;
        const pts = Number(p.pts);
        const dts = Math.min(Number(p.dts), pts);
        const avcc = this.#withParameterSets(open, annexBToAvcc(data), keyframe);
        this.#packets++;
        out({ data: avcc, dts, pts, keyframe });
      } finally {
        p.unref();
      }
    }
  }

  /** Puts SPS and PPS in front of an IDR that does not carry them (NVENC, x264 with global headers). */
  #withParameterSets(open: Open, avcc: Buffer, keyframe: boolean): Buffer {
    if (!keyframe) return avcc;
    for (const nal of nalUnits(avcc, 4)) if ((nal[0]! & 0x1f) === NalType.SPS) return avcc;
    const sets = [...open.sps, ...open.pps];
    let size = avcc.length;
    for (const s of sets) size += 4 + s.length;
    const out = Buffer.allocUnsafe(size);
    let off = 0;
    for (const s of sets) {
      off = out.writeUInt32BE(s.length, off);
      off += s.copy(out, off);
    }
    avcc.copy(out, off);
    return out;
  }

  #openEncoder(first: PooledFrame): Open {
    const { lib, c } = this.#av;
    const o = this.opts;
    const gpu = this.#pool.backend === 'gpu';
    const name = gpu ? 'h264_nvenc' : 'libx264';
    const codec = lib.Codec.findEncoderByName(gpu ? c.FF_ENCODER_H264_NVENC : c.FF_ENCODER_LIBX264);
    if (!codec) throw new TranscodeError('encode', `this FFmpeg build has no ${name} encoder`);
    const ctx = new lib.CodecContext();
    ctx.allocContext3(codec);
    try {
      ctx.width = o.width;
      ctx.height = o.height;
      ctx.timeBase = new lib.Rational(1, 90_000);
      ctx.framerate = new lib.Rational(Math.round(o.fps * 1000), 1000);
      ctx.sampleAspectRatio = new lib.Rational(1, 1);
      ctx.bitRate = BigInt(o.bitrate);
      ctx.rcMaxRate = BigInt(o.bitrate);
      ctx.rcBufferSize = o.bitrate * 2;
      ctx.gopSize = o.gopFrames;
      ctx.maxBFrames = 0;
      ctx.setFlags(c.AV_CODEC_FLAG_GLOBAL_HEADER);
      let options: Record<string, string>;
      if (gpu) {
        const hw = first.frame.hwFramesCtx;
        if (!hw) throw new TranscodeError('encode', 'NVENC needs CUDA frames and got a host frame');
        ctx.pixelFormat = c.AV_PIX_FMT_CUDA;
        ctx.hwFramesCtx = hw;
        ctx.hwDeviceCtx = this.#pool.device!;
        options = { preset: 'p4', tune: 'll', rc: 'vbr', 'forced-idr': '1', 'no-scenecut': '1', zerolatency: '1' };
      } else {
        ctx.pixelFormat = c.AV_PIX_FMT_YUV420P;
        ctx.threadCount = o.threads;
        options = { preset: o.preset, tune: 'zerolatency', 'forced-idr': '1', 'x264-params': 'scenecut=0' };
      }
      // Private options are set on the context: node-av 6.1.1's open2Sync with a Dictionary leaves the
      // Dictionary pointing at memory avcodec_open2 freed, and freeing or collecting it then crashes.
      for (const [k, v] of Object.entries(options)) check(this.#av, ctx.setOption(k, v), 'encode', `${name} option ${k}=${v}`);
      const ret = ctx.open2Sync(codec, null);
      if (ret < 0) throw new TranscodeError('encode', `cannot open ${name} for ${o.width}x${o.height} at ${o.bitrate} bit/s: ${avErrorText(this.#av, ret)}`, ret);
      const extradata = ctx.extraData;
      if (!extradata || extradata.length === 0) throw new TranscodeError('encode', `${name} gave no SPS/PPS in its global header`);
      const { sps, pps } = parameterSets(extradata);
      const spsNal = sps[0];
      if (!spsNal || pps.length === 0) throw new TranscodeError('encode', `${name}'s global header has no SPS or no PPS`);
      const info = parseSps(spsNal);
      const packet = new lib.Packet();
      packet.alloc();
      return {
        ctx,
        packet,
        sps,
        pps,
        track: { config: buildAvcC(sps, pps), width: info.width, height: info.height, codecString: avcCodecString(info) },
      };
    } catch (err) {
      ctx.freeContext();
      throw err;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#open) {
      this.#open.packet.free();
      this.#open.ctx.freeContext();
      this.#open = undefined;
    }
  }
}
