/**
 * H.264 decoding into the frame pool. Input is what a Stream carries: AVCC access units (4-byte
 * lengths) with the avcC record as the decoder configuration, times on the 90 kHz clock. On the GPU
 * backend NVDEC decodes into CUDA surfaces; on the CPU backend libavcodec decodes in software.
 * Driven synchronously (sendPacketSync/receiveFrameSync): it runs in a worker thread.
 */
import type { CodecContext, Packet } from 'node-av/lib';
import { TranscodeError, avErrorText, check } from './errors.ts';
import type { FramePool, PooledFrame } from './frame-pool.ts';
import type { NodeAv } from './native.ts';

export interface EncodedInput {
  readonly data: Uint8Array;
  readonly dts: number;
  readonly pts: number;
  readonly keyframe: boolean;
}

export interface DecoderOptions {
  /** Decoder threads on the CPU backend (frame threading adds a frame of delay per thread). */
  threads?: number;
}

/** A decoded picture, lent to the callback: the decoder releases it when the callback returns. */
export interface DecodedPicture {
  readonly slot: PooledFrame;
  readonly pts: number;
  readonly keyframe: boolean;
}

const TB_90K = { num: 1, den: 90_000 };

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export class VideoDecoder {
  readonly #av: NodeAv;
  readonly #pool: FramePool;
  readonly #ctx: CodecContext;
  readonly #packet: Packet;
  #closed = false;
  #frames = 0;
  #lastPts = -1;

  constructor(av: NodeAv, pool: FramePool, avcC: Uint8Array, opts: DecoderOptions = {}) {
    const { lib, c } = av;
    this.#av = av;
    this.#pool = pool;
    const codec = lib.Codec.findDecoder(c.AV_CODEC_ID_H264);
    if (!codec) throw new TranscodeError('decode', 'this FFmpeg build has no H.264 decoder');
    const ctx = new lib.CodecContext();
    ctx.allocContext3(codec);
    ctx.extraData = Buffer.from(avcC);
    ctx.pktTimebase = new lib.Rational(TB_90K.num, TB_90K.den);
    if (pool.backend === 'gpu') {
      // NVDEC through the H.264 hwaccel: pictures stay CUDA surfaces. Its surface pool is the DPB plus
      // these extra frames, fixed at open; we hold at most pool.size of them at once.
      ctx.hwDeviceCtx = pool.device!;
      ctx.setHardwarePixelFormat(c.AV_PIX_FMT_CUDA);
      ctx.extraHWFrames = pool.size;
    } else {
      ctx.threadCount = opts.threads ?? 1;
    }
    const ret = ctx.open2Sync(codec, null);
    if (ret < 0) {
      ctx.freeContext();
      throw new TranscodeError('decode', `cannot open the H.264 decoder: ${avErrorText(av, ret)}`, ret);
    }
    this.#ctx = ctx;
    const p = new lib.Packet();
    p.alloc();
    this.#packet = p;
  }

  get framesDecoded(): number {
    return this.#frames;
  }

  /** Decodes one access unit; each picture it completes is lent to `out`. */
  decode(input: EncodedInput, out: (pic: DecodedPicture) => void): void {
    if (this.#closed) throw new TranscodeError('decode', 'decode after close');
    // An empty packet would tell the decoder the stream ended.
    if (input.data.length === 0) return;
    const p = this.#packet;
    p.data = asBuffer(input.data);
    p.pts = BigInt(input.pts);
    p.dts = BigInt(input.dts);
    p.isKeyframe = input.keyframe;
    let ret: number;
    try {
      ret = this.#ctx.sendPacketSync(p);
    } finally {
      p.unref();
    }
    // A broken access unit is the publisher's problem, not a reason to stop: skip it.
    if (ret < 0 && ret !== this.#av.c.AVERROR_EAGAIN && ret !== this.#av.c.AVERROR_INVALIDDATA) check(this.#av, ret, 'decode', 'sending a packet');
    this.#receive(out);
  }

  /** Drains the pictures still inside the decoder (end of stream or a new configuration). */
  flush(out: (pic: DecodedPicture) => void): void {
    if (this.#closed) return;
    const ret = this.#ctx.sendPacketSync(null);
    if (ret < 0 && ret !== this.#av.c.AVERROR_EOF) check(this.#av, ret, 'decode', 'flushing');
    this.#receive(out);
  }

  #receive(out: (pic: DecodedPicture) => void): void {
    const { c } = this.#av;
    for (;;) {
      const slot = this.#pool.acquire();
      try {
        const ret = this.#ctx.receiveFrameSync(slot.frame);
        if (ret === c.AVERROR_EAGAIN || ret === c.AVERROR_EOF) return;
        check(this.#av, ret, 'decode', 'receiving a frame');
        const f = slot.frame;
        if (this.#pool.backend === 'gpu') {
          if (!f.isHwFrame()) throw new TranscodeError('decode', 'NVDEC did not take this stream (profile, level or size it does not support); use pool.backend cpu for it');
          if (this.#frames === 0) this.#pool.noteSurfaces('decoder', f.hwFramesCtx);
        }
        let pts = Number(f.bestEffortTimestamp);
        if (!Number.isFinite(pts) || pts < 0) pts = Number(f.pts);
        if (!Number.isFinite(pts) || pts < 0) pts = this.#lastPts + 1;
        this.#lastPts = pts;
        this.#frames++;
        out({ slot, pts, keyframe: f.hasFlags(c.AV_FRAME_FLAG_KEY) || f.pictType === c.AV_PICTURE_TYPE_I });
      } finally {
        slot.release();
      }
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#packet.free();
    this.#ctx.freeContext();
    this.#pool.forgetSurfaces('decoder');
  }
}
