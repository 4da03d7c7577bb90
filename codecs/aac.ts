/**
 * AAC bytes: the AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) and ADTS framing (1.A.2).
 * Bad input throws CodecError('aac', reason).
 */
import { CodecError } from './errors.ts';

function fail(reason: string): never {
  throw new CodecError('aac', reason);
}

/** samplingFrequencyIndex 0..12; 13 and 14 are reserved, 15 means an explicit 24-bit rate follows. */
const SAMPLE_RATES = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350] as const;

/** channelConfiguration -> channel count (0 = program config element, not supported). */
const CHANNELS_BY_CONFIG: ReadonlyMap<number, number> = new Map([
  [1, 1],
  [2, 2],
  [3, 3],
  [4, 4],
  [5, 5],
  [6, 6],
  [7, 8],
  [11, 7],
  [12, 8],
  [13, 24],
  [14, 8],
]);

/** channel count -> the channelConfiguration that ADTS (3 bits) and a plain ASC can carry. */
function channelConfigFor(channels: number): number {
  if (Number.isInteger(channels) && channels >= 1 && channels <= 6) return channels;
  if (channels === 8) return 7;
  fail(`${channels} channels have no channel configuration of 1..7`);
}

export interface AacConfig {
  /** Audio object type as signalled: 2 = AAC-LC, 5 = SBR (HE-AAC), 29 = PS (HE-AACv2), ... */
  objectType: number;
  /** samplingFrequencyIndex, or 15 when the rate was given explicitly. */
  samplingIndex: number;
  /** The core sampling rate (for HE-AAC the output rate is twice this). */
  sampleRate: number;
  channels: number;
}

class BitReader {
  private pos = 0;
  constructor(private readonly data: Uint8Array) {}
  bits(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) {
      const byte = this.pos >>> 3;
      if (byte >= this.data.length) fail(`AudioSpecificConfig truncated at bit ${this.pos}`);
      v = v * 2 + ((this.data[byte]! >>> (7 - (this.pos & 7))) & 1);
      this.pos++;
    }
    return v;
  }
}

function readObjectType(r: BitReader): number {
  const t = r.bits(5);
  return t === 31 ? 32 + r.bits(6) : t;
}

function readSampling(r: BitReader): { index: number; rate: number } {
  const index = r.bits(4);
  if (index === 15) {
    const rate = r.bits(24);
    if (rate === 0) fail('AudioSpecificConfig explicit sampling frequency is 0');
    return { index, rate };
  }
  const rate = SAMPLE_RATES[index];
  if (rate === undefined) fail(`AudioSpecificConfig samplingFrequencyIndex ${index} is reserved`);
  return { index, rate };
}

/**
 * Parses the leading fields of an AudioSpecificConfig: object type (with the 31 escape), sampling
 * frequency (with the 15 escape) and channel configuration. For explicitly signalled SBR/PS (object
 * types 5 and 29) the signalled type is reported with the core rate; the fields after are not read.
 */
export function parseAudioSpecificConfig(asc: Uint8Array): AacConfig {
  if (asc.length < 2) fail(`AudioSpecificConfig too short: ${asc.length} bytes`);
  const r = new BitReader(asc);
  const objectType = readObjectType(r);
  if (objectType === 0) fail('AudioSpecificConfig audioObjectType 0 is null');
  const { index, rate } = readSampling(r);
  const config = r.bits(4);
  if (config === 0) fail('AudioSpecificConfig channelConfiguration 0 (program config element) is not supported');
  const channels = CHANNELS_BY_CONFIG.get(config);
  if (channels === undefined) fail(`AudioSpecificConfig channelConfiguration ${config} is reserved`);
  if (objectType === 5 || objectType === 29) {
    readSampling(r); // extensionSamplingFrequencyIndex: must be well-formed
    const core = readObjectType(r);
    if (core === 0 || core === 5 || core === 29) fail(`AudioSpecificConfig SBR core object type ${core} is invalid`);
  }
  return { objectType, samplingIndex: index, sampleRate: rate, channels };
}

/**
 * Builds a 2-byte (5 with an explicit rate) AudioSpecificConfig for AAC Main/LC/SSR/LTP (object types
 * 1..4) with a plain GASpecificConfig (1024-sample frames, no core coder, no extension).
 */
export function buildAudioSpecificConfig(c: { objectType: number; sampleRate: number; channels: number }): Buffer {
  if (!Number.isInteger(c.objectType) || c.objectType < 1 || c.objectType > 4) {
    fail(`cannot build an AudioSpecificConfig for object type ${c.objectType} (1..4 supported)`);
  }
  if (!Number.isInteger(c.sampleRate) || c.sampleRate < 1 || c.sampleRate > 0xffffff) fail(`sample rate ${c.sampleRate} is out of range`);
  const channelConfig = channelConfigFor(c.channels);
  const index = (SAMPLE_RATES as readonly number[]).indexOf(c.sampleRate);
  if (index >= 0) {
    // 5 + 4 + 4 + 3 (GASpecificConfig) = 16 bits
    const v = (c.objectType << 11) | (index << 7) | (channelConfig << 3);
    return Buffer.from([v >>> 8, v & 0xff]);
  }
  // 5 + 4 + 24 + 4 + 3 = 40 bits
  const out = Buffer.alloc(5);
  let acc = c.objectType * 2 ** 35 + 15 * 2 ** 31 + c.sampleRate * 2 ** 7 + channelConfig * 2 ** 3;
  for (let i = 4; i >= 0; i--) {
    out[i] = acc % 256;
    acc = Math.floor(acc / 256);
  }
  return out;
}

/** ADTS profile (2 bits) for an object type: implicit signalling for SBR/PS, so they are sent as LC. */
function adtsProfile(objectType: number): number {
  if (objectType === 5 || objectType === 29) return 1;
  if (objectType >= 1 && objectType <= 4) return objectType - 1;
  return fail(`object type ${objectType} cannot be carried in ADTS`);
}

/** A 7-byte ADTS header (MPEG-4, no CRC, VBR buffer fullness) for one raw data block of `payloadLength` bytes. */
export function adtsHeader(c: AacConfig, payloadLength: number): Buffer {
  const profile = adtsProfile(c.objectType);
  if (!(c.samplingIndex >= 0 && c.samplingIndex <= 12)) fail(`sampling index ${c.samplingIndex} cannot be carried in ADTS`);
  const channelConfig = channelConfigFor(c.channels);
  const frameLength = payloadLength + 7;
  if (!Number.isInteger(payloadLength) || payloadLength < 0 || frameLength > 0x1fff) {
    fail(`ADTS payload length ${payloadLength} does not fit in 13 bits with the header`);
  }
  const h = Buffer.allocUnsafe(7);
  h[0] = 0xff;
  h[1] = 0xf1; // syncword, MPEG-4, layer 0, protection_absent
  h[2] = (profile << 6) | (c.samplingIndex << 2) | (channelConfig >>> 2);
  h[3] = ((channelConfig & 3) << 6) | (frameLength >>> 11);
  h[4] = (frameLength >>> 3) & 0xff;
  h[5] = ((frameLength & 7) << 5) | 0x1f; // buffer fullness 0x7ff (VBR)
  h[6] = 0xfc; // buffer fullness low bits, one raw data block
  return h;
}

export interface AdtsFrame {
  config: AacConfig;
  payload: Buffer;
}

/**
 * Yields the frames of an ADTS stream; payloads are views into `data`. Headers with a CRC (9 bytes) are
 * read and the CRC skipped. Frames with more than one raw data block, a reserved sampling index or
 * channel configuration 0, and any bytes that are not a whole frame, are rejected.
 */
export function* readAdts(data: Uint8Array): Generator<AdtsFrame> {
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let off = 0;
  let last: AacConfig | undefined;
  let lastKey = -1;
  while (off < b.length) {
    if (b.length - off < 7) fail(`truncated ADTS header at offset ${off}: ${b.length - off} bytes left`);
    const b1 = b[off + 1]!;
    const b2 = b[off + 2]!;
    const b3 = b[off + 3]!;
    if (b[off] !== 0xff || (b1 & 0xf0) !== 0xf0) fail(`no ADTS syncword at offset ${off}`);
    if (b1 & 0x06) fail(`ADTS layer ${(b1 >>> 1) & 3} at offset ${off}, expected 0`);
    const headerLength = b1 & 1 ? 7 : 9;
    const profile = b2 >>> 6;
    const samplingIndex = (b2 >>> 2) & 0xf;
    const channelConfig = ((b2 & 1) << 2) | (b3 >>> 6);
    const frameLength = ((b3 & 3) << 11) | (b[off + 4]! << 3) | (b[off + 5]! >>> 5);
    const blocks = (b[off + 6]! & 3) + 1;
    const sampleRate = SAMPLE_RATES[samplingIndex];
    if (sampleRate === undefined) fail(`ADTS sampling index ${samplingIndex} at offset ${off} is reserved`);
    if (channelConfig === 0) fail(`ADTS channel configuration 0 at offset ${off} is not supported`);
    if (blocks !== 1) fail(`ADTS frame at offset ${off} has ${blocks} raw data blocks; only 1 is supported`);
    if (frameLength < headerLength) fail(`ADTS frame length ${frameLength} at offset ${off} is shorter than its ${headerLength}-byte header`);
    if (frameLength > b.length - off) fail(`ADTS frame length ${frameLength} at offset ${off} exceeds the ${b.length - off} bytes left`);
    const key = (profile << 8) | (samplingIndex << 4) | channelConfig;
    if (last === undefined || key !== lastKey) {
      last = Object.freeze({ objectType: profile + 1, samplingIndex, sampleRate, channels: CHANNELS_BY_CONFIG.get(channelConfig)! });
      lastKey = key;
    }
    yield { config: last, payload: b.subarray(off + headerLength, off + frameLength) };
    off += frameLength;
  }
}

/** RFC 6381 codec string: mp4a.40.<object type>. */
export function aacCodecString(c: AacConfig): string {
  return `mp4a.40.${c.objectType}`;
}
