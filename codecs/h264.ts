/**
 * H.264 bytes: the sequence parameter set (size, profile, level), the avcC decoder configuration record,
 * and the two NAL framings (AVCC length prefixes, Annex B start codes). Every length is checked against
 * the bytes that remain before it is used; bad input throws CodecError('h264', reason).
 */
import { CodecError } from './errors.ts';

export const NalType = { IDR: 5, SEI: 6, SPS: 7, PPS: 8, AUD: 9 } as const;

function fail(reason: string): never {
  throw new CodecError('h264', reason);
}

function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

// ---------------------------------------------------------------------------------------------------
// SPS

export interface Sps {
  profileIdc: number;
  constraintFlags: number;
  levelIdc: number;
  width: number;
  height: number;
  chromaFormatIdc: number;
  bitDepth: number;
}

/** The largest picture side we accept, in pixels (level 6.2 allows 8192x4320; this leaves room). */
const MAX_SIDE = 16384;

/** Profiles whose SPS carries chroma_format_idc, bit depths and scaling matrices (7.3.2.1.1). */
const HIGH_PROFILES = new Set([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135]);

/** Removes emulation prevention bytes (the 0x03 in 00 00 03) and returns the RBSP. */
function unescapeRbsp(data: Uint8Array, start: number): Uint8Array {
  const out = new Uint8Array(data.length - start);
  let n = 0;
  let zeros = 0;
  for (let i = start; i < data.length; i++) {
    const b = data[i]!;
    if (zeros >= 2 && b === 3) {
      zeros = 0;
      continue;
    }
    out[n++] = b;
    zeros = b === 0 ? zeros + 1 : 0;
  }
  return out.subarray(0, n);
}

/** MSB-first bit reader over an RBSP with Exp-Golomb codes; reading past the end throws. */
class BitReader {
  private pos = 0;
  constructor(
    private readonly data: Uint8Array,
    private readonly what: string,
  ) {}

  bit(): number {
    const byte = this.pos >>> 3;
    if (byte >= this.data.length) fail(`${this.what} truncated at bit ${this.pos}`);
    const v = (this.data[byte]! >>> (7 - (this.pos & 7))) & 1;
    this.pos++;
    return v;
  }

  bits(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 2 + this.bit();
    return v;
  }

  /** ue(v): at most 31 leading zeros, so the value fits in 32 bits. */
  ue(field: string): number {
    let zeros = 0;
    while (this.bit() === 0) {
      if (++zeros > 31) fail(`${this.what} ${field}: Exp-Golomb code longer than 32 bits`);
    }
    return 2 ** zeros - 1 + this.bits(zeros);
  }

  se(field: string): number {
    const k = this.ue(field);
    return k % 2 === 1 ? (k + 1) / 2 : -(k / 2);
  }

  /** ue(v) that must be <= max. */
  ueMax(field: string, max: number): number {
    const v = this.ue(field);
    if (v > max) fail(`${this.what} ${field} ${v} exceeds ${max}`);
    return v;
  }
}

function skipScalingList(r: BitReader, size: number): void {
  let last = 8;
  let next = 8;
  for (let j = 0; j < size; j++) {
    if (next !== 0) {
      const delta = r.se('delta_scale');
      if (delta < -128 || delta > 127) fail(`SPS delta_scale ${delta} out of range -128..127`);
      next = (last + delta + 256) % 256;
    }
    last = next === 0 ? last : next;
  }
}

/**
 * Parses a sequence parameter set NAL unit (with its 1-byte NAL header, emulation prevention bytes
 * still in place) up to the frame cropping fields; the VUI is not read.
 */
export function parseSps(nal: Uint8Array): Sps {
  if (nal.length < 1) fail('SPS is empty');
  const header = nal[0]!;
  if (header & 0x80) fail('SPS forbidden_zero_bit is set');
  if ((header & 0x1f) !== NalType.SPS) fail(`expected an SPS (NAL type 7), got NAL type ${header & 0x1f}`);
  const r = new BitReader(unescapeRbsp(nal, 1), 'SPS');

  const profileIdc = r.bits(8);
  const constraintFlags = r.bits(8);
  const levelIdc = r.bits(8);
  r.ueMax('seq_parameter_set_id', 31);

  let chromaFormatIdc = 1;
  let separateColourPlane = 0;
  let bitDepth = 8;
  if (HIGH_PROFILES.has(profileIdc)) {
    chromaFormatIdc = r.ueMax('chroma_format_idc', 3);
    if (chromaFormatIdc === 3) separateColourPlane = r.bit();
    bitDepth = r.ueMax('bit_depth_luma_minus8', 6) + 8;
    r.ueMax('bit_depth_chroma_minus8', 6);
    r.bit(); // qpprime_y_zero_transform_bypass_flag
    if (r.bit()) {
      // seq_scaling_matrix_present_flag
      const lists = chromaFormatIdc !== 3 ? 8 : 12;
      for (let i = 0; i < lists; i++) {
        if (r.bit()) skipScalingList(r, i < 6 ? 16 : 64);
      }
    }
  }

  r.ueMax('log2_max_frame_num_minus4', 12);
  const pocType = r.ueMax('pic_order_cnt_type', 2);
  if (pocType === 0) {
    r.ueMax('log2_max_pic_order_cnt_lsb_minus4', 12);
  } else if (pocType === 1) {
    r.bit(); // delta_pic_order_always_zero_flag
    r.se('offset_for_non_ref_pic');
    r.se('offset_for_top_to_bottom_field');
    const cycle = r.ueMax('num_ref_frames_in_pic_order_cnt_cycle', 255);
    for (let i = 0; i < cycle; i++) r.se('offset_for_ref_frame');
  }
  r.ue('max_num_ref_frames');
  r.bit(); // gaps_in_frame_num_value_allowed_flag
  const widthMbs = r.ueMax('pic_width_in_mbs_minus1', MAX_SIDE / 16 - 1) + 1;
  const heightMapUnits = r.ueMax('pic_height_in_map_units_minus1', MAX_SIDE / 16 - 1) + 1;
  const frameMbsOnly = r.bit();
  if (!frameMbsOnly) r.bit(); // mb_adaptive_frame_field_flag
  r.bit(); // direct_8x8_inference_flag

  let width = widthMbs * 16;
  let height = (2 - frameMbsOnly) * heightMapUnits * 16;
  if (height > MAX_SIDE) fail(`SPS picture height ${height} exceeds ${MAX_SIDE}`);

  if (r.bit()) {
    // frame_cropping_flag
    const left = r.ue('frame_crop_left_offset');
    const right = r.ue('frame_crop_right_offset');
    const top = r.ue('frame_crop_top_offset');
    const bottom = r.ue('frame_crop_bottom_offset');
    const chromaArrayType = separateColourPlane ? 0 : chromaFormatIdc;
    const subWidthC = chromaArrayType === 1 || chromaArrayType === 2 ? 2 : 1;
    const subHeightC = chromaArrayType === 1 ? 2 : 1;
    const cropX = chromaArrayType === 0 ? 1 : subWidthC;
    const cropY = (chromaArrayType === 0 ? 1 : subHeightC) * (2 - frameMbsOnly);
    const cropW = (left + right) * cropX;
    const cropH = (top + bottom) * cropY;
    if (cropW >= width) fail(`SPS horizontal cropping ${cropW} leaves no picture of width ${width}`);
    if (cropH >= height) fail(`SPS vertical cropping ${cropH} leaves no picture of height ${height}`);
    width -= cropW;
    height -= cropH;
  }

  return { profileIdc, constraintFlags, levelIdc, width, height, chromaFormatIdc, bitDepth };
}

/** RFC 6381 codec string: avc1.PPCCLL in hex (profile, constraint flags, level). */
export function avcCodecString(sps: Sps): string {
  const hex = (v: number) => (v & 0xff).toString(16).padStart(2, '0');
  return `avc1.${hex(sps.profileIdc)}${hex(sps.constraintFlags)}${hex(sps.levelIdc)}`;
}

// ---------------------------------------------------------------------------------------------------
// avcC (ISO/IEC 14496-15 AVCDecoderConfigurationRecord)

export interface AvcConfig {
  profile: number;
  compatibility: number;
  level: number;
  nalLengthSize: number;
  sps: Buffer[];
  pps: Buffer[];
}

/**
 * Parses an avcC record. The SPS and PPS are copies (they outlive the record's buffer). Any
 * high-profile extension after the PPS list is ignored. Length sizes 1 to 4 are accepted.
 */
export function parseAvcC(record: Uint8Array): AvcConfig {
  const b = asBuffer(record);
  if (b.length < 7) fail(`avcC too short: ${b.length} bytes, need at least 7`);
  if (b[0] !== 1) fail(`avcC configurationVersion ${b[0]}, expected 1`);
  const profile = b[1]!;
  const compatibility = b[2]!;
  const level = b[3]!;
  const nalLengthSize = (b[4]! & 3) + 1;
  let off = 6;
  const readSets = (count: number, type: number, name: string): Buffer[] => {
    const sets: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      if (off + 2 > b.length) fail(`avcC truncated before the length of ${name} ${i}`);
      const len = b.readUInt16BE(off);
      off += 2;
      if (len === 0) fail(`avcC ${name} ${i} is empty`);
      if (len > b.length - off) fail(`avcC ${name} ${i} length ${len} exceeds the ${b.length - off} bytes left`);
      const nal = Buffer.from(b.subarray(off, off + len));
      if ((nal[0]! & 0x1f) !== type) fail(`avcC ${name} ${i} has NAL type ${nal[0]! & 0x1f}, expected ${type}`);
      sets.push(nal);
      off += len;
    }
    return sets;
  };
  const sps = readSets(b[5]! & 0x1f, NalType.SPS, 'SPS');
  if (sps.length === 0) fail('avcC has no SPS');
  if (off >= b.length) fail('avcC truncated before the PPS count');
  const ppsCount = b[off++]!;
  const pps = readSets(ppsCount, NalType.PPS, 'PPS');
  if (pps.length === 0) fail('avcC has no PPS');
  return { profile, compatibility, level, nalLengthSize, sps, pps };
}

/**
 * Builds an avcC record with 4-byte NAL lengths. Profile, compatibility and level come from the first
 * SPS; for high profiles the chroma format / bit depth extension is written, as the standard requires.
 */
export function buildAvcC(sps: readonly Uint8Array[], pps: readonly Uint8Array[]): Buffer {
  if (sps.length === 0 || sps.length > 31) fail(`avcC needs 1 to 31 SPS, got ${sps.length}`);
  if (pps.length === 0 || pps.length > 255) fail(`avcC needs 1 to 255 PPS, got ${pps.length}`);
  let size = 7;
  for (const [list, type, name] of [
    [sps, NalType.SPS, 'SPS'],
    [pps, NalType.PPS, 'PPS'],
  ] as const) {
    for (const nal of list) {
      if (nal.length < 1 || nal.length > 0xffff) fail(`${name} length ${nal.length} does not fit in avcC`);
      if ((nal[0]! & 0x1f) !== type) fail(`${name} has NAL type ${nal[0]! & 0x1f}, expected ${type}`);
      size += 2 + nal.length;
    }
  }
  const first = sps[0]!;
  const parsed = parseSps(first);
  const extended = parsed.profileIdc === 100 || parsed.profileIdc === 110 || parsed.profileIdc === 122 || parsed.profileIdc === 144;
  if (extended) size += 4;
  const out = Buffer.alloc(size);
  out[0] = 1;
  out[1] = parsed.profileIdc;
  out[2] = parsed.constraintFlags;
  out[3] = parsed.levelIdc;
  out[4] = 0xff; // reserved 6 bits + lengthSizeMinusOne = 3
  out[5] = 0xe0 | sps.length;
  let off = 6;
  for (const nal of sps) {
    off = out.writeUInt16BE(nal.length, off);
    out.set(nal, off);
    off += nal.length;
  }
  out[off++] = pps.length;
  for (const nal of pps) {
    off = out.writeUInt16BE(nal.length, off);
    out.set(nal, off);
    off += nal.length;
  }
  if (extended) {
    out[off++] = 0xfc | parsed.chromaFormatIdc;
    out[off++] = 0xf8 | (parsed.bitDepth - 8);
    out[off++] = 0xf8 | (parsed.bitDepth - 8);
    out[off++] = 0; // numOfSequenceParameterSetExt
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// NAL framing

function checkLengthSize(lengthSize: number): void {
  if (lengthSize !== 1 && lengthSize !== 2 && lengthSize !== 3 && lengthSize !== 4) {
    fail(`NAL length size ${lengthSize} is not 1, 2, 3 or 4`);
  }
}

function readLength(b: Uint8Array, off: number, size: number): number {
  let v = 0;
  for (let i = 0; i < size; i++) v = v * 256 + b[off + i]!;
  return v;
}

/**
 * Walks length-prefixed NAL units, calling `each(start, end)` for every NAL payload after checking its
 * length against the bytes left. Shared by every AVCC reader here so the checks live in one place.
 */
function walkAvcc(b: Uint8Array, lengthSize: number, each: (start: number, end: number) => void): void {
  checkLengthSize(lengthSize);
  let off = 0;
  while (off < b.length) {
    if (b.length - off < lengthSize) fail(`truncated NAL length prefix at offset ${off}`);
    const len = readLength(b, off, lengthSize);
    off += lengthSize;
    if (len === 0) fail(`zero-length NAL unit at offset ${off - lengthSize}`);
    if (len > b.length - off) fail(`NAL length ${len} at offset ${off - lengthSize} exceeds the ${b.length - off} bytes left`);
    each(off, off + len);
    off += len;
  }
}

/** Yields the NAL units (views, not copies) of length-prefixed (AVCC) data. */
export function* nalUnits(avcc: Uint8Array, lengthSize = 4): Generator<Buffer> {
  checkLengthSize(lengthSize);
  const b = asBuffer(avcc);
  let off = 0;
  while (off < b.length) {
    if (b.length - off < lengthSize) fail(`truncated NAL length prefix at offset ${off}`);
    const len = readLength(b, off, lengthSize);
    off += lengthSize;
    if (len === 0) fail(`zero-length NAL unit at offset ${off - lengthSize}`);
    if (len > b.length - off) fail(`NAL length ${len} at offset ${off - lengthSize} exceeds the ${b.length - off} bytes left`);
    yield b.subarray(off, off + len);
    off += len;
  }
}

const START_CODE = Buffer.from([0, 0, 1]);

/**
 * Splits an Annex B byte stream into NAL units (views, not copies). Accepts 3- and 4-byte start codes
 * and leading zero bytes; trailing zero bytes before a start code are dropped; empty NALs are skipped.
 * Data that does not begin with a start code is rejected. Empty input gives no NAL units.
 */
export function splitAnnexB(data: Uint8Array): Buffer[] {
  const b = asBuffer(data);
  const out: Buffer[] = [];
  if (b.length === 0) return out;
  const first = b.indexOf(START_CODE);
  if (first < 0) fail('Annex B data has no start code');
  for (let i = 0; i < first; i++) if (b[i] !== 0) fail(`Annex B data does not begin with a start code (byte ${i} is ${b[i]})`);
  let start = first + 3;
  while (start <= b.length) {
    const next = b.indexOf(START_CODE, start);
    let end = next < 0 ? b.length : next;
    while (end > start && b[end - 1] === 0) end--; // the zero of a 4-byte start code, or trailing_zero_8bits
    if (end > start) out.push(b.subarray(start, end));
    if (next < 0) break;
    start = next + 3;
  }
  return out;
}

/** Converts Annex B to AVCC with 4-byte lengths (one new buffer). */
export function annexBToAvcc(data: Uint8Array): Buffer {
  const nals = splitAnnexB(data);
  let size = 0;
  for (const nal of nals) size += 4 + nal.length;
  const out = Buffer.allocUnsafe(size);
  let off = 0;
  for (const nal of nals) {
    off = out.writeUInt32BE(nal.length, off);
    off += nal.copy(out, off);
  }
  return out;
}

/** Converts AVCC (any length size) to Annex B with 4-byte start codes (one new buffer). */
export function avccToAnnexB(avcc: Uint8Array, lengthSize = 4): Buffer {
  let size = 0;
  walkAvcc(avcc, lengthSize, (s, e) => {
    size += 4 + (e - s);
  });
  const out = Buffer.allocUnsafe(size);
  let off = 0;
  walkAvcc(avcc, lengthSize, (s, e) => {
    out.writeUInt32BE(1, off);
    out.set(avcc.subarray(s, e), off + 4);
    off += 4 + (e - s);
  });
  return out;
}

/** Re-prefixes 1-, 2- or 3-byte NAL lengths as 4-byte lengths; returns the input itself when already 4. */
export function toLengthSize4(avcc: Uint8Array, lengthSize: number): Uint8Array {
  checkLengthSize(lengthSize);
  if (lengthSize === 4) return avcc;
  let size = 0;
  walkAvcc(avcc, lengthSize, (s, e) => {
    size += 4 + (e - s);
  });
  const out = Buffer.allocUnsafe(size);
  let off = 0;
  walkAvcc(avcc, lengthSize, (s, e) => {
    out.writeUInt32BE(e - s, off);
    out.set(avcc.subarray(s, e), off + 4);
    off += 4 + (e - s);
  });
  return out;
}

/** True when any NAL unit of the access unit is an IDR slice (type 5). Lengths are checked throughout. */
export function isIdr(avcc: Uint8Array, lengthSize = 4): boolean {
  let idr = false;
  walkAvcc(avcc, lengthSize, (s) => {
    if ((avcc[s]! & 0x1f) === NalType.IDR) idr = true;
  });
  return idr;
}
