/**
 * Opus to AAC-LC, so that WebRTC audio reaches MPEG-TS HLS and RTMP. Input is what a Stream carries
 * for an Opus track: raw packets on the 90 kHz clock, the OpusHead as config (48 kHz). Output is raw
 * AAC access units of 1024 samples with the AudioSpecificConfig as config.
 *
 * Timestamps are kept: the decoded samples are laid on one timeline anchored at the first packet's
 * time; 1024 samples become one AAC frame whose time is its first sample's. Short gaps (DTX, a lost
 * packet) are filled with silence so the AAC timeline stays continuous; a jump back or of more than a
 * second restarts the timeline there. The AAC encoder's priming frame sits 1024 samples before the
 * anchor, as it must for the audio to line up; it is dropped only where it would be negative.
 */
import type { AudioFifo, CodecContext, Frame, Packet } from 'node-av/lib';
import { aacCodecString, buildAudioSpecificConfig, parseAudioSpecificConfig } from '../aac.ts';
import { parseOpusHead } from '../opus.ts';
import { TranscodeError, avErrorText, check } from './errors.ts';
import type { NodeAv } from './native.ts';

export const AAC_FRAME_SAMPLES = 1024;
const SAMPLE_RATE = 48_000;
const TICKS_PER_SAMPLE = 90_000 / SAMPLE_RATE;
/** Input may wander this far from the timeline before it counts as a gap or an overlap. */
const TOLERANCE_TICKS = 1800;
/** Gaps up to this long are filled with silence; longer ones restart the timeline. */
const MAX_FILL_TICKS = 90_000;

export interface AudioInput {
  readonly data: Uint8Array;
  /** 90 kHz. */
  readonly pts: number;
}

export interface AacPacket {
  readonly data: Buffer;
  /** 90 kHz; DTS is the same. */
  readonly pts: number;
}

export interface AacTrackInfo {
  /** AudioSpecificConfig. */
  readonly config: Buffer;
  readonly sampleRate: number;
  readonly channels: number;
  readonly codecString: string;
}

export interface OpusToAacOptions {
  /** AAC bitrate, bits per second. */
  bitrate: number;
}

interface Encoder {
  readonly ctx: CodecContext;
  readonly fifo: AudioFifo;
  /** 90 kHz time of the timeline's sample 0. */
  readonly anchor: number;
  /** Samples written to the FIFO on this timeline. */
  samplesIn: number;
  /** Samples handed to the encoder on this timeline (its next frame's pts, in 1/48000). */
  samplesOut: number;
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

export class OpusToAac {
  readonly track: AacTrackInfo;
  readonly #av: NodeAv;
  readonly #opts: OpusToAacOptions;
  readonly #channels: number;
  readonly #dec: CodecContext;
  readonly #packet: Packet;
  readonly #decoded: Frame;
  readonly #input: Frame;
  readonly #outPacket: Packet;
  #enc: Encoder | undefined;
  #closed = false;
  #packetsIn = 0;
  #framesOut = 0;
  #silence = 0;
  #restarts = 0;
  #lastOut = -1;

  constructor(av: NodeAv, opusHead: Uint8Array, opts: OpusToAacOptions) {
    const { lib } = av;
    this.#av = av;
    this.#opts = opts;
    let head;
    try {
      head = parseOpusHead(opusHead);
    } catch (err) {
      throw new TranscodeError('audio', `bad OpusHead: ${(err as Error).message}`);
    }
    if (head.channels > 8) throw new TranscodeError('audio', `${head.channels} Opus channels: AAC here takes up to 8`);
    this.#channels = head.channels;
    const codec = lib.Codec.findDecoderByName(av.c.FF_DECODER_OPUS) ?? lib.Codec.findDecoder(av.c.AV_CODEC_ID_OPUS);
    if (!codec) throw new TranscodeError('audio', 'this FFmpeg build has no Opus decoder');
    const dec = new lib.CodecContext();
    dec.allocContext3(codec);
    dec.extraData = Buffer.from(opusHead);
    dec.pktTimebase = new lib.Rational(1, 90_000);
    dec.sampleRate = SAMPLE_RATE;
    dec.channelLayout = lib.avChannelLayoutDefault(head.channels);
    const ret = dec.open2Sync(codec, null);
    if (ret < 0) {
      dec.freeContext();
      throw new TranscodeError('audio', `cannot open the Opus decoder: ${avErrorText(av, ret)}`, ret);
    }
    this.#dec = dec;
    this.#packet = new lib.Packet();
    this.#packet.alloc();
    this.#outPacket = new lib.Packet();
    this.#outPacket.alloc();
    this.#decoded = new lib.Frame();
    this.#decoded.alloc();
    this.#input = new lib.Frame();
    this.#input.alloc();
    try {
      // Open one encoder now: its AudioSpecificConfig is the track config from the start.
      const enc = this.#openEncoder(0);
      const extradata = enc.ctx.extraData;
      const config = extradata && extradata.length >= 2 ? Buffer.from(extradata) : buildAudioSpecificConfig({ objectType: 2, sampleRate: SAMPLE_RATE, channels: head.channels });
      const asc = parseAudioSpecificConfig(config);
      this.track = { config, sampleRate: asc.sampleRate, channels: asc.channels, codecString: aacCodecString(asc) };
      this.#freeEncoder(enc);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  get packetsIn(): number {
    return this.#packetsIn;
  }

  get framesOut(): number {
    return this.#framesOut;
  }

  /** Samples of silence put in for gaps. */
  get silenceSamples(): number {
    return this.#silence;
  }

  /** Times the timeline restarted after a jump. */
  get restarts(): number {
    return this.#restarts;
  }

  /** One Opus packet; the AAC frames it completes go to `out`. */
  push(input: AudioInput, out: (p: AacPacket) => void): void {
    if (this.#closed) throw new TranscodeError('audio', 'push after close');
    const { c } = this.#av;
    const p = this.#packet;
    p.data = asBuffer(input.data);
    p.pts = BigInt(input.pts);
    p.dts = BigInt(input.pts);
    let ret: number;
    try {
      ret = this.#dec.sendPacketSync(p);
    } finally {
      p.unref();
    }
    this.#packetsIn++;
    // A corrupt packet is skipped; the gap it leaves is filled with silence.
    if (ret < 0 && ret !== c.AVERROR_INVALIDDATA && ret !== c.AVERROR_EAGAIN) check(this.#av, ret, 'audio', 'sending an Opus packet');
    this.#drainDecoder(out);
  }

  /** Ends the stream: the samples still buffered are padded to a frame and everything is encoded. */
  flush(out: (p: AacPacket) => void): void {
    if (this.#closed) return;
    const ret = this.#dec.sendPacketSync(null);
    if (ret >= 0) this.#drainDecoder(out);
    const enc = this.#enc;
    if (!enc) return;
    this.#finish(enc, out);
    this.#freeEncoder(enc);
    this.#enc = undefined;
  }

  #drainDecoder(out: (p: AacPacket) => void): void {
    const { c } = this.#av;
    const f = this.#decoded;
    for (;;) {
      const ret = this.#dec.receiveFrameSync(f);
      if (ret === c.AVERROR_EAGAIN || ret === c.AVERROR_EOF) return;
      if (ret === c.AVERROR_INVALIDDATA) continue;
      check(this.#av, ret, 'audio', 'decoding Opus');
      try {
        if (f.format !== c.AV_SAMPLE_FMT_FLTP || f.sampleRate !== SAMPLE_RATE || f.channels !== this.#channels) {
          throw new TranscodeError('audio', `the Opus decoder gave format ${f.format} at ${f.sampleRate} Hz with ${f.channels} channels; expected planar float at 48000 Hz with ${this.#channels}`);
        }
        this.#place(Number(f.pts), f, out);
      } finally {
        f.unref();
      }
    }
  }

  /** Puts decoded samples on the timeline (filling a gap or restarting it first) and encodes full frames. */
  #place(pts: number, f: Frame, out: (p: AacPacket) => void): void {
    let enc = this.#enc;
    if (enc && Number.isFinite(pts) && pts >= 0) {
      const expected = enc.anchor + enc.samplesIn * TICKS_PER_SAMPLE;
      const delta = pts - expected;
      if (delta > TOLERANCE_TICKS && delta <= MAX_FILL_TICKS) {
        this.#writeSilence(enc, Math.round(delta / TICKS_PER_SAMPLE));
      } else if (delta < -TOLERANCE_TICKS || delta > MAX_FILL_TICKS) {
        this.#finish(enc, out);
        this.#freeEncoder(enc);
        this.#enc = enc = undefined;
        this.#restarts++;
      }
    }
    if (!enc) {
      const anchor = Number.isFinite(pts) && pts >= 0 ? pts : 0;
      enc = this.#enc = this.#openEncoder(anchor);
    }
    const n = f.nbSamples;
    const data = f.data;
    if (!data) throw new TranscodeError('audio', 'decoded Opus frame without data');
    check(this.#av, enc.fifo.writeSync(data, n), 'audio', 'buffering samples');
    enc.samplesIn += n;
    this.#encodeFull(enc, out);
  }

  #writeSilence(enc: Encoder, samples: number): void {
    if (samples <= 0) return;
    const planes: Buffer[] = [];
    for (let i = 0; i < this.#channels; i++) planes.push(Buffer.alloc(samples * 4));
    check(this.#av, enc.fifo.writeSync(planes, samples), 'audio', 'buffering silence');
    enc.samplesIn += samples;
    this.#silence += samples;
  }

  #encodeFull(enc: Encoder, out: (p: AacPacket) => void): void {
    while (enc.fifo.size >= AAC_FRAME_SAMPLES) this.#encodeOne(enc, out);
  }

  #encodeOne(enc: Encoder, out: (p: AacPacket) => void): void {
    const { lib, c } = this.#av;
    const f = this.#input;
    f.nbSamples = AAC_FRAME_SAMPLES;
    f.format = c.AV_SAMPLE_FMT_FLTP;
    f.sampleRate = SAMPLE_RATE;
    f.channelLayout = lib.avChannelLayoutDefault(this.#channels);
    try {
      check(this.#av, f.getBuffer(0), 'audio', 'allocating an AAC input frame');
      const planes = f.data;
      if (!planes) throw new TranscodeError('audio', 'AAC input frame without data');
      // Less than a frame left (the end): the rest of the frame stays silent.
      for (const plane of planes) plane.fill(0);
      check(this.#av, enc.fifo.readSync(planes, Math.min(AAC_FRAME_SAMPLES, enc.fifo.size)), 'audio', 'reading samples');
      f.pts = BigInt(enc.samplesOut);
      enc.samplesOut += AAC_FRAME_SAMPLES;
      check(this.#av, enc.ctx.sendFrameSync(f), 'audio', 'sending a frame to the AAC encoder');
    } finally {
      f.unref();
    }
    this.#receive(enc, out);
  }

  #receive(enc: Encoder, out: (p: AacPacket) => void): void {
    const { c } = this.#av;
    const p = this.#outPacket;
    for (;;) {
      const ret = enc.ctx.receivePacketSync(p);
      if (ret === c.AVERROR_EAGAIN || ret === c.AVERROR_EOF) return;
      check(this.#av, ret, 'audio', 'receiving an AAC packet');
      try {
        const data = p.data;
        const pts = enc.anchor + Math.round(Number(p.pts) * TICKS_PER_SAMPLE);
        // The priming frame before a timeline that starts at 0, or an overlap with the last timeline.
        if (!data || data.length === 0 || pts < 0 || pts <= this.#lastOut) continue;
        this.#lastOut = pts;
        this.#framesOut++;
        out({ data: Buffer.from(data), pts });
      } finally {
        p.unref();
      }
    }
  }

  /** Encodes what the FIFO holds (the last frame padded with silence) and drains the encoder. */
  #finish(enc: Encoder, out: (p: AacPacket) => void): void {
    while (enc.fifo.size > 0) this.#encodeOne(enc, out);
    const ret = enc.ctx.sendFrameSync(null);
    if (ret < 0 && ret !== this.#av.c.AVERROR_EOF) check(this.#av, ret, 'audio', 'flushing the AAC encoder');
    this.#receive(enc, out);
  }

  #openEncoder(anchor: number): Encoder {
    const { lib, c } = this.#av;
    const codec = lib.Codec.findEncoderByName(c.FF_ENCODER_AAC);
    if (!codec) throw new TranscodeError('audio', 'this FFmpeg build has no AAC encoder');
    const ctx = new lib.CodecContext();
    ctx.allocContext3(codec);
    ctx.sampleFormat = c.AV_SAMPLE_FMT_FLTP;
    ctx.sampleRate = SAMPLE_RATE;
    ctx.channelLayout = lib.avChannelLayoutDefault(this.#channels);
    ctx.bitRate = BigInt(this.#opts.bitrate);
    ctx.timeBase = new lib.Rational(1, SAMPLE_RATE);
    ctx.setFlags(c.AV_CODEC_FLAG_GLOBAL_HEADER);
    const ret = ctx.open2Sync(codec, null);
    if (ret < 0) {
      ctx.freeContext();
      throw new TranscodeError('audio', `cannot open the AAC encoder at ${this.#opts.bitrate} bit/s: ${avErrorText(this.#av, ret)}`, ret);
    }
    const fifo = new lib.AudioFifo();
    fifo.alloc(c.AV_SAMPLE_FMT_FLTP, this.#channels, AAC_FRAME_SAMPLES * 4);
    return { ctx, fifo, anchor, samplesIn: 0, samplesOut: 0 };
  }

  #freeEncoder(enc: Encoder): void {
    enc.fifo.free();
    enc.ctx.freeContext();
  }

  /** Frees every native object. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#enc) this.#freeEncoder(this.#enc);
    this.#enc = undefined;
    this.#dec?.freeContext();
    this.#packet?.free();
    this.#outPacket?.free();
    this.#decoded?.free();
    this.#input?.free();
  }
}
