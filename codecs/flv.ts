/**
 * FLV: the audio/video tag bodies that RTMP messages carry, and FLV files (header, tags, PreviousTagSize).
 *
 * Video is H.264 or HEVC, either legacy FLV (codec id 7, or the widespread non-standard 12 for HEVC) or
 * Enhanced RTMP (ExHeader bit with FourCC 'avc1'/'hvc1'); both map to one header shape so callers never
 * care which a publisher sent. Audio is AAC. Everything else is rejected with CodecError('flv', reason).
 */
import { CodecError } from './errors.ts';

export const enum FlvTagType {
  Audio = 8,
  Video = 9,
  Script = 18,
}

export interface VideoTagHeader {
  /** 1 keyframe, 2 inter, 3 disposable inter, 4 generated keyframe, 5 info/command (carries no media). */
  frameType: number;
  /** 7 AVC, 12 HEVC; Enhanced RTMP FourCCs are mapped onto these. 0 for an Enhanced command frame. */
  codecId: number;
  packetType: 'config' | 'nalu' | 'eos';
  /** PTS - DTS in milliseconds (signed 24-bit); 0 where the packet has none. */
  compositionTime: number;
  /** Where the decoder config record or the length-prefixed NAL units start in the body. */
  payloadOffset: number;
}

export interface AudioTagHeader {
  /** 10 AAC (the only format accepted). */
  soundFormat: number;
  packetType: 'config' | 'raw';
  payloadOffset: number;
  /** The header's rate in Hz (5512, 11025, 22050, 44100); AAC always says 44100, its real rate is in the ASC. */
  soundRate: number;
  /** Bits per sample: 8 or 16. */
  soundSize: number;
  stereo: boolean;
}

export interface FlvTag {
  type: number;
  /** Milliseconds, 32 bits (the 24-bit field plus its extension byte). */
  timestamp: number;
  /** A view into the input buffer, not a copy. */
  body: Buffer;
}

const fail = (reason: string): never => {
  throw new CodecError('flv', reason);
};

const CODEC_AVC = 7;
const CODEC_HEVC = 12;
const FRAME_INFO = 5;

/** Reads a signed 24-bit big-endian integer. The caller has checked that 3 bytes remain. */
function si24(b: Uint8Array, at: number): number {
  const v = ((b[at] ?? 0) << 16) | ((b[at + 1] ?? 0) << 8) | (b[at + 2] ?? 0);
  return v & 0x800000 ? v - 0x1000000 : v;
}

function u24(b: Uint8Array, at: number): number {
  return ((b[at] ?? 0) << 16) | ((b[at + 1] ?? 0) << 8) | (b[at + 2] ?? 0);
}

function u32(b: Uint8Array, at: number): number {
  return (((b[at] ?? 0) << 24) >>> 0) + (((b[at + 1] ?? 0) << 16) | ((b[at + 2] ?? 0) << 8) | (b[at + 3] ?? 0));
}

/** A tag that carries no media (info/command/metadata): an empty payload, so it can only be skipped. */
function infoTag(body: Uint8Array, codecId: number): VideoTagHeader {
  return { frameType: FRAME_INFO, codecId, packetType: 'nalu', compositionTime: 0, payloadOffset: body.length };
}

/** Parses the header of an FLV/RTMP video tag body, legacy or Enhanced RTMP. */
export function parseVideoTag(body: Uint8Array): VideoTagHeader {
  const b0 = body[0];
  if (b0 === undefined) return fail('empty video tag');
  if (b0 & 0x80) return parseExVideoTag(body, b0);

  const frameType = b0 >> 4;
  const codecId = b0 & 0x0f;
  if (codecId !== CODEC_AVC && codecId !== CODEC_HEVC) fail(`unsupported video codec id ${codecId}`);
  if (frameType < 1 || frameType > 5) fail(`invalid video frame type ${frameType}`);
  // An info frame is two bytes (frame type/codec, then a seek command); it has no AVC packet header.
  if (frameType === FRAME_INFO) return infoTag(body, codecId);
  if (body.length < 5) fail(`video tag of ${body.length} bytes is shorter than the 5-byte AVC/HEVC header`);
  const pt = body[1];
  const packetType = pt === 0 ? 'config' : pt === 1 ? 'nalu' : pt === 2 ? 'eos' : fail(`invalid AVC packet type ${pt}`);
  return { frameType, codecId, packetType, compositionTime: si24(body, 2), payloadOffset: 5 };
}

/** Enhanced RTMP (veovera, v1/v2): [ExHeader|FrameType:3|PacketType:4] [FourCC] [SI24 CT for CodedFrames]. */
function parseExVideoTag(body: Uint8Array, b0: number): VideoTagHeader {
  const frameType = (b0 >> 4) & 0x07;
  const pkt = b0 & 0x0f;
  const METADATA = 4;
  // A command frame (v2) has a one-byte command instead of a FourCC; it names no codec.
  if (frameType === FRAME_INFO && pkt !== METADATA) return infoTag(body, 0);
  if (pkt === 6) fail('enhanced video multitrack packets are not supported');
  if (pkt === 7) fail('enhanced video ModEx packets are not supported');
  if (body.length < 5) fail(`enhanced video tag of ${body.length} bytes is shorter than its 5-byte header`);
  const fourcc = String.fromCharCode(body[1] ?? 0, body[2] ?? 0, body[3] ?? 0, body[4] ?? 0);
  const codecId = fourcc === 'avc1' ? CODEC_AVC : fourcc === 'hvc1' ? CODEC_HEVC : 0;
  if (codecId === 0) fail(`unsupported enhanced video FourCC ${JSON.stringify(fourcc)}`);
  // AMF colour/HDR metadata is not media: surfaced as an info frame so callers skip it. OBS sends it with
  // frame type 0 (0x84), so the frame type is not checked for it.
  if (pkt === METADATA) return infoTag(body, codecId);
  if (frameType < 1 || frameType > 4) fail(`invalid video frame type ${frameType}`);
  switch (pkt) {
    case 0: // SequenceStart: the avcC/hvcC record follows
      return { frameType, codecId, packetType: 'config', compositionTime: 0, payloadOffset: 5 };
    case 1: // CodedFrames: SI24 composition time, then NAL units
      if (body.length < 8) fail(`enhanced coded frames tag of ${body.length} bytes lacks its composition time`);
      return { frameType, codecId, packetType: 'nalu', compositionTime: si24(body, 5), payloadOffset: 8 };
    case 2: // SequenceEnd
      return { frameType, codecId, packetType: 'eos', compositionTime: 0, payloadOffset: 5 };
    case 3: // CodedFramesX: composition time is implicitly 0
      return { frameType, codecId, packetType: 'nalu', compositionTime: 0, payloadOffset: 5 };
    default:
      return fail(`unsupported enhanced video packet type ${pkt}`);
  }
}

const SOUND_RATES = [5512, 11025, 22050, 44100] as const;
const SOUND_AAC = 10;

/** Parses the header of an FLV/RTMP audio tag body; only AAC is accepted. */
export function parseAudioTag(body: Uint8Array): AudioTagHeader {
  const b0 = body[0];
  if (b0 === undefined) return fail('empty audio tag');
  const soundFormat = b0 >> 4;
  if (soundFormat === 9) fail('enhanced audio (ExHeader) is not supported');
  if (soundFormat !== SOUND_AAC) fail(`unsupported sound format ${soundFormat}`);
  if (body.length < 2) fail('AAC audio tag lacks its packet type byte');
  const pt = body[1];
  const packetType = pt === 0 ? 'config' : pt === 1 ? 'raw' : fail(`invalid AAC packet type ${pt}`);
  return {
    soundFormat,
    packetType,
    payloadOffset: 2,
    soundRate: SOUND_RATES[(b0 >> 2) & 3] ?? 44100,
    soundSize: b0 & 0x02 ? 16 : 8,
    stereo: (b0 & 0x01) === 1,
  };
}

/** The 5-byte legacy header: [frame type|codec id] [AVC packet type] [SI24 composition time]. */
export function videoTagHeader(o: {
  keyframe: boolean;
  codecId: 7 | 12;
  packetType: 'config' | 'nalu' | 'eos';
  compositionTime: number;
}): Buffer {
  const ct = o.compositionTime;
  if (!Number.isInteger(ct) || ct < -0x800000 || ct > 0x7fffff) {
    fail(`composition time ${ct} ms does not fit a signed 24-bit field`);
  }
  const h = Buffer.alloc(5);
  h[0] = ((o.keyframe ? 1 : 2) << 4) | o.codecId;
  h[1] = o.packetType === 'config' ? 0 : o.packetType === 'nalu' ? 1 : 2;
  h.writeIntBE(ct, 2, 3);
  return h;
}

/** The 2-byte AAC header. 0xAF (AAC, 44.1 kHz, 16-bit, stereo) is what the FLV spec requires for AAC. */
export function audioTagHeader(o: { packetType: 'config' | 'raw' }): Buffer {
  return Buffer.from([0xaf, o.packetType === 'config' ? 0 : 1]);
}

const FILE_HEADER_SIZE = 9;
const TAG_HEADER_SIZE = 11;

/**
 * Reads the tags of an FLV file. Every size is checked before use and every PreviousTagSize must match the
 * tag before it; tags read before an error have already been yielded. Encrypted (filtered) tags are refused.
 */
export function* readFlvFile(buf: Buffer): Generator<FlvTag> {
  if (buf.length < FILE_HEADER_SIZE) fail(`file of ${buf.length} bytes is shorter than the 9-byte FLV header`);
  if (buf[0] !== 0x46 || buf[1] !== 0x4c || buf[2] !== 0x56) fail('missing FLV signature');
  if (buf[3] !== 1) fail(`unsupported FLV version ${buf[3]}`);
  const dataOffset = u32(buf, 5);
  if (dataOffset < FILE_HEADER_SIZE) fail(`FLV data offset ${dataOffset} is inside the 9-byte header`);
  if (dataOffset + 4 > buf.length) fail(`FLV data offset ${dataOffset} leaves no room for PreviousTagSize0`);
  const prev0 = u32(buf, dataOffset);
  if (prev0 !== 0) fail(`PreviousTagSize0 is ${prev0}, not 0`);

  let pos = dataOffset + 4;
  while (pos < buf.length) {
    const left = buf.length - pos;
    if (left < TAG_HEADER_SIZE) fail(`truncated tag header at offset ${pos}: ${left} of 11 bytes`);
    const b0 = buf[pos] ?? 0;
    if (b0 & 0x20) fail(`encrypted (filtered) tag at offset ${pos} is not supported`);
    const size = u24(buf, pos + 1);
    if (size + 4 > left - TAG_HEADER_SIZE) {
      fail(`tag at offset ${pos} declares ${size} body bytes, only ${left - TAG_HEADER_SIZE} remain`);
    }
    const timestamp = u24(buf, pos + 4) + (buf[pos + 7] ?? 0) * 0x1000000;
    const start = pos + TAG_HEADER_SIZE;
    const prev = u32(buf, start + size);
    if (prev !== TAG_HEADER_SIZE + size) {
      fail(`PreviousTagSize ${prev} at offset ${start + size} does not match tag size ${TAG_HEADER_SIZE + size}`);
    }
    pos = start + size + 4;
    yield { type: b0 & 0x1f, timestamp, body: buf.subarray(start, start + size) };
  }
}

/** The 9-byte FLV header followed by PreviousTagSize0, so a file is this plus a sequence of flvTag()s. */
export function flvFileHeader(o: { audio: boolean; video: boolean }): Buffer {
  const h = Buffer.from([0x46, 0x4c, 0x56, 1, 0, 0, 0, 0, FILE_HEADER_SIZE, 0, 0, 0, 0]);
  h[4] = (o.audio ? 0x04 : 0) | (o.video ? 0x01 : 0);
  return h;
}

/**
 * One FLV tag: 11-byte header, body, PreviousTagSize. The timestamp is written modulo 2^32 ms (the field's
 * width, as in RTMP), so a writer running past 49.7 days wraps like its readers expect.
 */
export function flvTag(type: number, timestampMs: number, body: Uint8Array): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > 0x1f) fail(`tag type ${type} does not fit 5 bits`);
  if (!Number.isInteger(timestampMs) || timestampMs < 0) fail(`tag timestamp ${timestampMs} is not a non-negative integer`);
  if (body.length > 0xffffff) fail(`tag body of ${body.length} bytes exceeds the 24-bit size field`);
  const ts = timestampMs % 0x100000000;
  const out = Buffer.alloc(TAG_HEADER_SIZE + body.length + 4);
  out[0] = type;
  out.writeUIntBE(body.length, 1, 3);
  out.writeUIntBE(ts & 0xffffff, 4, 3);
  out[7] = Math.floor(ts / 0x1000000);
  // Bytes 8..10: stream id, always 0.
  out.set(body, TAG_HEADER_SIZE);
  out.writeUInt32BE(TAG_HEADER_SIZE + body.length, TAG_HEADER_SIZE + body.length);
  return out;
}
