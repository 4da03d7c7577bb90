/**
 * Opus: the identification header (OpusHead, RFC 7845 5.1) that travels as an Opus track's
 * config, and the packet TOC (RFC 6716 3.1) read to validate a packet and learn its duration.
 * Pure code over bytes.
 */
import { CodecError } from './errors.ts';

/** Opus always runs on a 48 kHz clock (RFC 7587). */
export const OPUS_SAMPLE_RATE = 48_000;

export interface OpusHeadOptions {
  /** Output channel count, 1 or 2 (mapping family 0). */
  readonly channels: number;
  /** Samples at 48 kHz to discard at the start of decoding (default 0: a live source joined mid-stream). */
  readonly preSkip?: number;
  /** The original input sample rate, informational (default 48000). */
  readonly inputSampleRate?: number;
}

/** The 19-byte OpusHead for channel mapping family 0. */
export function opusHead(opts: OpusHeadOptions): Buffer {
  const { channels } = opts;
  if (channels !== 1 && channels !== 2) throw new RangeError(`Opus mapping family 0 has 1 or 2 channels, not ${channels}`);
  const preSkip = opts.preSkip ?? 0;
  if (!Number.isInteger(preSkip) || preSkip < 0 || preSkip > 0xffff) throw new RangeError(`pre-skip ${preSkip} outside 0..65535`);
  const b = Buffer.alloc(19);
  b.write('OpusHead', 0, 'latin1');
  b[8] = 1; // version
  b[9] = channels;
  b.writeUInt16LE(preSkip, 10);
  b.writeUInt32LE(opts.inputSampleRate ?? OPUS_SAMPLE_RATE, 12);
  b.writeInt16LE(0, 16); // output gain
  b[18] = 0; // channel mapping family
  return b;
}

export interface OpusHeadInfo {
  readonly version: number;
  readonly channels: number;
  readonly preSkip: number;
  readonly inputSampleRate: number;
  readonly outputGain: number;
  readonly mappingFamily: number;
}

export function parseOpusHead(b: Uint8Array): OpusHeadInfo {
  if (b.length < 19) throw new CodecError('opus', `OpusHead of ${b.length} bytes, need 19`);
  if (Buffer.from(b.subarray(0, 8)).toString('latin1') !== 'OpusHead') throw new CodecError('opus', 'missing OpusHead magic');
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const version = b[8]!;
  if (version >> 4 !== 0) throw new CodecError('opus', `OpusHead version ${version} unsupported`);
  const channels = b[9]!;
  if (channels === 0) throw new CodecError('opus', 'OpusHead with 0 channels');
  return {
    version,
    channels,
    preSkip: v.getUint16(10, true),
    inputSampleRate: v.getUint32(12, true),
    outputGain: v.getInt16(16, true),
    mappingFamily: b[18]!,
  };
}

/** Samples (at 48 kHz) in one frame of each TOC configuration. */
function frameSamples(config: number): number {
  if (config < 12) return [480, 960, 1920, 2880][config & 3]!; // SILK: 10, 20, 40, 60 ms
  if (config < 16) return [480, 960][config & 1]!; // Hybrid: 10, 20 ms
  return [120, 240, 480, 960][config & 3]!; // CELT: 2.5, 5, 10, 20 ms
}

export interface OpusPacketInfo {
  /** Total samples at 48 kHz in the packet. */
  readonly samples: number;
  readonly frames: number;
  readonly stereo: boolean;
}

/**
 * Reads an Opus packet's TOC and frame layout and checks it against RFC 6716 3.4 (R1-R7 as far
 * as sizes go): lengths must fit the packet, the duration must not exceed 120 ms.
 */
export function parseOpusPacket(p: Uint8Array): OpusPacketInfo {
  if (p.length < 1) throw new CodecError('opus', 'empty packet');
  const toc = p[0]!;
  const per = frameSamples(toc >> 3);
  const stereo = (toc & 0x04) !== 0;
  const code = toc & 0x03;
  const len = p.length;
  let frames: number;
  switch (code) {
    case 0:
      frames = 1;
      break;
    case 1:
      if ((len - 1) % 2 !== 0) throw new CodecError('opus', 'code 1 packet with an odd payload length');
      frames = 2;
      break;
    case 2: {
      if (len < 2) throw new CodecError('opus', 'code 2 packet without a frame length');
      let n = p[1]!;
      let off = 2;
      if (n >= 252) {
        if (len < 3) throw new CodecError('opus', 'code 2 packet ends inside a frame length');
        n += 4 * p[2]!;
        off = 3;
      }
      if (off + n > len) throw new CodecError('opus', `code 2 first frame of ${n} bytes runs past the packet`);
      frames = 2;
      break;
    }
    default: {
      if (len < 2) throw new CodecError('opus', 'code 3 packet without a frame count');
      const b1 = p[1]!;
      const vbr = (b1 & 0x80) !== 0;
      const padded = (b1 & 0x40) !== 0;
      frames = b1 & 0x3f;
      if (frames === 0) throw new CodecError('opus', 'code 3 packet with 0 frames');
      if (frames * per > 5760) throw new CodecError('opus', `code 3 packet of ${(frames * per) / 48} ms exceeds 120 ms`);
      let off = 2;
      let padding = 0;
      if (padded) {
        for (;;) {
          if (off >= len) throw new CodecError('opus', 'code 3 packet ends inside its padding length');
          const v = p[off++]!;
          padding += v === 255 ? 254 : v;
          if (v !== 255) break;
        }
      }
      let dataEnd = len - padding;
      if (dataEnd < off) throw new CodecError('opus', `padding of ${padding} bytes runs past the packet`);
      if (vbr) {
        for (let i = 0; i < frames - 1; i++) {
          if (off >= dataEnd) throw new CodecError('opus', 'code 3 packet ends inside a frame length');
          let n = p[off++]!;
          if (n >= 252) {
            if (off >= dataEnd) throw new CodecError('opus', 'code 3 packet ends inside a frame length');
            n += 4 * p[off++]!;
          }
          dataEnd -= n;
          if (dataEnd < off) throw new CodecError('opus', 'code 3 frame lengths run past the packet');
        }
      } else if ((dataEnd - off) % frames !== 0) {
        throw new CodecError('opus', 'code 3 CBR packet whose payload does not split into equal frames');
      }
      break;
    }
  }
  return { samples: frames * per, frames, stereo };
}
