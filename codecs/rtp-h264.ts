/**
 * H.264 over RTP (RFC 6184, packetization-mode 1): single NAL unit packets, STAP-A and FU-A are
 * reassembled into whole access units (closed by the marker bit or a new timestamp), and access
 * units are written as AVCC (4-byte lengths). Pure code over bytes: no I/O, no timers.
 *
 * Also here, until codecs/h264.ts lands: a minimal SPS reader and avcC builder (`interimH264`),
 * named so that the one place using them can switch to codecs/h264.ts in one line.
 */
import { CodecError } from './errors.ts';
import { seqDelta } from './rtp.ts';

/** What the depacketizer needs of an RTP packet (see codecs/rtp.ts RtpPacket). */
export interface H264RtpPacket {
  readonly sequenceNumber: number;
  readonly timestamp: number;
  readonly marker: boolean;
  readonly payload: Uint8Array;
}

export interface H264AccessUnit {
  /** RTP timestamp (32-bit, 90 kHz) shared by the unit's packets. */
  readonly timestamp: number;
  /**
   * The unit's NAL units in order, without start codes or lengths. SPS, PPS, access unit
   * delimiters and filler data are taken out (the SPS/PPS travel as `sps`/`pps`).
   */
  readonly nalus: readonly Uint8Array[];
  /** Holds an IDR slice. */
  readonly keyframe: boolean;
  /** The last SPS seen in this unit, or in parameter-set-only packets just before it. */
  readonly sps: Uint8Array | undefined;
  /** The last PPS seen in this unit, or in parameter-set-only packets just before it. */
  readonly pps: Uint8Array | undefined;
}

export interface H264DepacketizerOptions {
  /** A unit larger than this is dropped (default 8 MiB). */
  readonly maxAccessUnitBytes?: number;
  /** A unit with more NAL units than this is dropped (default 1024). */
  readonly maxNalUnits?: number;
  /** Called for every access unit dropped, with the reason and its RTP timestamp. */
  readonly onDrop?: (reason: string, timestamp: number) => void;
}

export interface H264DepacketizerStats {
  packets: number;
  units: number;
  dropped: number;
  /** Sequence gaps seen (each gap counts once, whatever its length). */
  gaps: number;
}

interface Building {
  ts: number;
  nalus: Uint8Array[];
  bytes: number;
  keyframe: boolean;
  vcl: boolean;
  sps: Uint8Array | undefined;
  pps: Uint8Array | undefined;
  corrupt: string | undefined;
}

interface Fragment {
  header: number;
  parts: Uint8Array[];
  bytes: number;
}

const NONE: readonly H264AccessUnit[] = Object.freeze([]);

const NAL_IDR = 5;
const NAL_SPS = 7;
const NAL_PPS = 8;
const NAL_AUD = 9;
const NAL_FILLER = 12;
const STAP_A = 24;
const FU_A = 28;

/**
 * Reassembles in-order RTP packets (pass them through a ReorderBuffer first) into access units.
 * A sequence gap drops the unit it falls into, and the unit after it when the gap falls between
 * units (the lost packets may have been its start); every drop is counted and reported through
 * `onDrop`. Malformed payloads drop their unit the same way instead of throwing.
 *
 * Units hold views of the packets' payloads until returned: callers must not reuse payload memory.
 */
export class H264Depacketizer {
  readonly #maxBytes: number;
  readonly #maxNalus: number;
  readonly #onDrop: ((reason: string, ts: number) => void) | undefined;
  #lastSeq = -1;
  #cur: Building | undefined;
  #frag: Fragment | undefined;
  #pendingSps: Uint8Array | undefined;
  #pendingPps: Uint8Array | undefined;
  #gapPending = false;
  readonly stats: H264DepacketizerStats = { packets: 0, units: 0, dropped: 0, gaps: 0 };

  constructor(opts: H264DepacketizerOptions = {}) {
    this.#maxBytes = opts.maxAccessUnitBytes ?? 8 * 1024 * 1024;
    this.#maxNalus = opts.maxNalUnits ?? 1024;
    this.#onDrop = opts.onDrop;
  }

  /** Feeds one packet; returns the access units it completed (usually none or one). */
  push(p: H264RtpPacket): readonly H264AccessUnit[] {
    this.stats.packets++;
    let out: H264AccessUnit[] | undefined;
    const seq = p.sequenceNumber & 0xffff;
    const ts = p.timestamp >>> 0;
    const gap = this.#lastSeq >= 0 && seqDelta(this.#lastSeq, seq) !== 1;
    this.#lastSeq = seq;
    if (gap) {
      this.stats.gaps++;
      if (this.#cur) this.#corrupt(this.#cur, 'packet loss inside the access unit');
      // The lost packets may also have been the start of the next unit.
      this.#gapPending = true;
    }
    // A padding-only packet (bandwidth probing) keeps its place in the sequence and carries nothing.
    if (p.payload.length === 0) return NONE;
    if (this.#cur && this.#cur.ts !== ts) {
      // The unit ended without a marker bit (or its marker packet was lost).
      out = this.#finish(out);
    }
    if (!this.#cur) {
      this.#cur = {
        ts,
        nalus: [],
        bytes: 0,
        keyframe: false,
        vcl: false,
        sps: undefined,
        pps: undefined,
        corrupt: this.#gapPending ? 'packet loss before the access unit' : undefined,
      };
    }
    this.#gapPending = false;
    try {
      this.#payload(p.payload);
    } catch (err) {
      if (!(err instanceof CodecError)) throw err;
      this.#corrupt(this.#cur, err.reason);
      this.#frag = undefined;
    }
    if (p.marker) out = this.#finish(out);
    return out ?? NONE;
  }

  /** Forgets the unit being built and the sequence (a new SSRC, or a restart). */
  reset(): void {
    this.#cur = undefined;
    this.#frag = undefined;
    this.#lastSeq = -1;
    this.#gapPending = false;
    this.#pendingSps = undefined;
    this.#pendingPps = undefined;
  }

  #corrupt(cur: Building, reason: string): void {
    cur.corrupt ??= reason;
    cur.nalus = [];
    cur.bytes = 0;
  }

  #payload(b: Uint8Array): void {
    const type = b[0]! & 0x1f;
    if (type >= 1 && type <= 23) {
      if (this.#frag) throw new CodecError('rtp-h264', 'NAL unit inside an unfinished FU-A');
      this.#nal(b);
    } else if (type === STAP_A) {
      if (this.#frag) throw new CodecError('rtp-h264', 'STAP-A inside an unfinished FU-A');
      for (const nal of splitStapA(b)) this.#nal(nal);
    } else if (type === FU_A) {
      this.#fuA(b);
    } else if (type === 25 || type === 26 || type === 27 || type === 29) {
      const name = type === 25 ? 'STAP-B' : type === 26 ? 'MTAP16' : type === 27 ? 'MTAP24' : 'FU-B';
      throw new CodecError('rtp-h264', `${name} (NAL type ${type}) is not allowed in packetization-mode 1`);
    }
    // Types 0, 30 and 31 are reserved: RFC 6184 5.4 says to ignore them.
  }

  #fuA(b: Uint8Array): void {
    if (b.length < 3) throw new CodecError('rtp-h264', `FU-A of ${b.length} bytes carries no fragment`);
    const fu = b[1]!;
    const start = (fu & 0x80) !== 0;
    const end = (fu & 0x40) !== 0;
    const nalType = fu & 0x1f;
    if (nalType === 0 || nalType >= 24) throw new CodecError('rtp-h264', `FU-A fragments NAL type ${nalType}`);
    const header = (b[0]! & 0xe0) | nalType;
    const body = b.subarray(2);
    if (start) {
      if (this.#frag) {
        this.#frag = undefined;
        throw new CodecError('rtp-h264', 'FU-A start inside an unfinished FU-A');
      }
      this.#frag = { header, parts: [body], bytes: body.length };
    } else {
      const f = this.#frag;
      if (!f) throw new CodecError('rtp-h264', 'FU-A continuation without its start');
      if (f.header !== header) throw new CodecError('rtp-h264', 'FU-A continuation of a different NAL unit');
      f.bytes += body.length;
      if (f.bytes > this.#maxBytes) throw new CodecError('rtp-h264', `fragmented NAL unit over ${this.#maxBytes} bytes`);
      f.parts.push(body);
    }
    if (end) {
      const f = this.#frag!;
      this.#frag = undefined;
      const nal = new Uint8Array(1 + f.bytes);
      nal[0] = f.header;
      let off = 1;
      for (const part of f.parts) {
        nal.set(part, off);
        off += part.length;
      }
      this.#nal(nal);
    }
  }

  #nal(nal: Uint8Array): void {
    const cur = this.#cur!;
    if (cur.corrupt) return;
    if ((nal[0]! & 0x80) !== 0) throw new CodecError('rtp-h264', 'NAL unit with forbidden_zero_bit set');
    const type = nal[0]! & 0x1f;
    if (type === 0 || type >= 24) throw new CodecError('rtp-h264', `STAP-A holds a NAL unit of type ${type}`);
    switch (type) {
      case NAL_SPS:
        cur.sps = nal;
        return;
      case NAL_PPS:
        cur.pps = nal;
        return;
      case NAL_AUD:
      case NAL_FILLER:
        return;
    }
    if (cur.nalus.length >= this.#maxNalus) throw new CodecError('rtp-h264', `access unit with more than ${this.#maxNalus} NAL units`);
    if (cur.bytes + nal.length > this.#maxBytes) throw new CodecError('rtp-h264', `access unit over ${this.#maxBytes} bytes`);
    if (type >= 1 && type <= 5) cur.vcl = true;
    if (type === NAL_IDR) cur.keyframe = true;
    cur.nalus.push(nal);
    cur.bytes += nal.length;
  }

  #finish(out: H264AccessUnit[] | undefined): H264AccessUnit[] | undefined {
    const cur = this.#cur;
    this.#cur = undefined;
    if (!cur) return out;
    if (this.#frag) {
      this.#frag = undefined;
      cur.corrupt ??= 'access unit ends inside a fragmented NAL unit';
    }
    if (cur.corrupt) {
      this.stats.dropped++;
      this.#onDrop?.(cur.corrupt, cur.ts);
      return out;
    }
    if (!cur.vcl) {
      // Parameter sets sent on their own (own packets with their own marker): keep them for the next unit.
      if (cur.sps) this.#pendingSps = cur.sps;
      if (cur.pps) this.#pendingPps = cur.pps;
      return out;
    }
    const au: H264AccessUnit = {
      timestamp: cur.ts,
      nalus: cur.nalus,
      keyframe: cur.keyframe,
      sps: cur.sps ?? this.#pendingSps,
      pps: cur.pps ?? this.#pendingPps,
    };
    this.#pendingSps = undefined;
    this.#pendingPps = undefined;
    this.stats.units++;
    (out ??= []).push(au);
    return out;
  }
}

/** The NAL units of a STAP-A payload (views). Every size is checked against the bytes left. */
export function splitStapA(b: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 1;
  while (off < b.length) {
    if (off + 2 > b.length) throw new CodecError('rtp-h264', 'STAP-A ends inside a NAL unit size');
    const size = (b[off]! << 8) | b[off + 1]!;
    off += 2;
    if (size === 0) throw new CodecError('rtp-h264', 'STAP-A holds a NAL unit of size 0');
    if (off + size > b.length) throw new CodecError('rtp-h264', `STAP-A NAL unit of ${size} bytes runs past the packet`);
    out.push(b.subarray(off, off + size));
    off += size;
  }
  if (out.length === 0) throw new CodecError('rtp-h264', 'STAP-A with no NAL units');
  return out;
}

/** Bytes needed to write `nalus` as AVCC with 4-byte lengths. */
export function avccLength(nalus: readonly Uint8Array[]): number {
  let n = 0;
  for (const nal of nalus) n += 4 + nal.length;
  return n;
}

/** Writes `nalus` as AVCC (4-byte big-endian length before each) into `target` at `offset`; returns the end offset. */
export function writeAvcc(nalus: readonly Uint8Array[], target: Uint8Array, offset = 0): number {
  if (offset + avccLength(nalus) > target.length) throw new RangeError('AVCC target too small');
  let off = offset;
  for (const nal of nalus) {
    const n = nal.length;
    target[off] = n >>> 24;
    target[off + 1] = (n >>> 16) & 0xff;
    target[off + 2] = (n >>> 8) & 0xff;
    target[off + 3] = n & 0xff;
    target.set(nal, off + 4);
    off += 4 + n;
  }
  return off;
}

// ---------------------------------------------------------------------------------------------
// Interim SPS reading and avcC building. Replace with codecs/h264.ts (parseSps, buildAvcC,
// avcCodecString) at merge; the only user is the default in gateway/webrtc/whip.ts.
// ---------------------------------------------------------------------------------------------

export interface InterimSpsInfo {
  readonly profileIdc: number;
  readonly constraintFlags: number;
  readonly levelIdc: number;
  readonly chromaFormatIdc: number;
  readonly bitDepthLuma: number;
  readonly bitDepthChroma: number;
  readonly width: number;
  readonly height: number;
}

/** Removes emulation prevention bytes (00 00 03 -> 00 00) from a NAL unit's payload. */
function unescapeRbsp(nal: Uint8Array): Uint8Array {
  const out = new Uint8Array(nal.length);
  let n = 0;
  let zeros = 0;
  for (let i = 0; i < nal.length; i++) {
    const v = nal[i]!;
    if (zeros >= 2 && v === 3) {
      zeros = 0;
      continue;
    }
    out[n++] = v;
    zeros = v === 0 ? zeros + 1 : 0;
  }
  return out.subarray(0, n);
}

class BitReader {
  #pos = 0;
  readonly #b: Uint8Array;
  constructor(b: Uint8Array) {
    this.#b = b;
  }
  bit(): number {
    const byte = this.#pos >> 3;
    if (byte >= this.#b.length) throw new CodecError('h264', 'SPS ends early');
    const v = (this.#b[byte]! >> (7 - (this.#pos & 7))) & 1;
    this.#pos++;
    return v;
  }
  bits(n: number): number {
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 2 + this.bit();
    return v;
  }
  ue(): number {
    let zeros = 0;
    while (this.bit() === 0) {
      if (++zeros > 31) throw new CodecError('h264', 'SPS Exp-Golomb code over 32 bits');
    }
    return 2 ** zeros - 1 + this.bits(zeros);
  }
  se(): number {
    const k = this.ue();
    return k % 2 === 1 ? (k + 1) / 2 : -(k / 2);
  }
}

const HIGH_PROFILES = new Set([100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135]);

/** Interim: reads profile, level, chroma format, bit depth and the cropped picture size from an SPS NAL unit. */
export function interimParseSps(nal: Uint8Array): InterimSpsInfo {
  if (nal.length < 4) throw new CodecError('h264', `SPS of ${nal.length} bytes`);
  if ((nal[0]! & 0x1f) !== NAL_SPS) throw new CodecError('h264', `NAL type ${nal[0]! & 0x1f} is not an SPS`);
  const r = new BitReader(unescapeRbsp(nal.subarray(1)));
  const profileIdc = r.bits(8);
  const constraintFlags = r.bits(8);
  const levelIdc = r.bits(8);
  const spsId = r.ue();
  if (spsId > 31) throw new CodecError('h264', `seq_parameter_set_id ${spsId} > 31`);
  let chromaFormatIdc = 1;
  let bitDepthLuma = 8;
  let bitDepthChroma = 8;
  let separateColourPlane = 0;
  if (HIGH_PROFILES.has(profileIdc)) {
    chromaFormatIdc = r.ue();
    if (chromaFormatIdc > 3) throw new CodecError('h264', `chroma_format_idc ${chromaFormatIdc} > 3`);
    if (chromaFormatIdc === 3) separateColourPlane = r.bit();
    bitDepthLuma = r.ue() + 8;
    bitDepthChroma = r.ue() + 8;
    if (bitDepthLuma > 14 || bitDepthChroma > 14) throw new CodecError('h264', 'bit depth over 14');
    r.bit(); // qpprime_y_zero_transform_bypass_flag
    if (r.bit()) {
      const lists = chromaFormatIdc !== 3 ? 8 : 12;
      for (let i = 0; i < lists; i++) {
        if (!r.bit()) continue;
        const size = i < 6 ? 16 : 64;
        let last = 8;
        let next = 8;
        for (let j = 0; j < size; j++) {
          if (next !== 0) next = (last + r.se() + 256) % 256;
          last = next === 0 ? last : next;
        }
      }
    }
  }
  const log2MaxFrameNumMinus4 = r.ue();
  if (log2MaxFrameNumMinus4 > 12) throw new CodecError('h264', 'log2_max_frame_num_minus4 > 12');
  const pocType = r.ue();
  if (pocType === 0) {
    if (r.ue() > 12) throw new CodecError('h264', 'log2_max_pic_order_cnt_lsb_minus4 > 12');
  } else if (pocType === 1) {
    r.bit();
    r.se();
    r.se();
    const cycle = r.ue();
    if (cycle > 255) throw new CodecError('h264', 'num_ref_frames_in_pic_order_cnt_cycle > 255');
    for (let i = 0; i < cycle; i++) r.se();
  } else if (pocType !== 2) {
    throw new CodecError('h264', `pic_order_cnt_type ${pocType} > 2`);
  }
  r.ue(); // max_num_ref_frames
  r.bit(); // gaps_in_frame_num_value_allowed_flag
  const widthMbs = r.ue() + 1;
  const heightMapUnits = r.ue() + 1;
  const frameMbsOnly = r.bit();
  if (!frameMbsOnly) r.bit(); // mb_adaptive_frame_field_flag
  r.bit(); // direct_8x8_inference_flag
  let cropLeft = 0;
  let cropRight = 0;
  let cropTop = 0;
  let cropBottom = 0;
  if (r.bit()) {
    cropLeft = r.ue();
    cropRight = r.ue();
    cropTop = r.ue();
    cropBottom = r.ue();
  }
  if (widthMbs > 1024 || heightMapUnits > 1024) throw new CodecError('h264', `SPS picture of ${widthMbs}x${heightMapUnits} macroblocks`);
  const chroma = separateColourPlane ? 0 : chromaFormatIdc;
  const subW = chroma === 1 || chroma === 2 ? 2 : 1;
  const subH = chroma === 1 ? 2 : 1;
  const cropUnitX = chroma === 0 ? 1 : subW;
  const cropUnitY = (chroma === 0 ? 1 : subH) * (2 - frameMbsOnly);
  const width = widthMbs * 16 - cropUnitX * (cropLeft + cropRight);
  const height = (2 - frameMbsOnly) * heightMapUnits * 16 - cropUnitY * (cropTop + cropBottom);
  if (width <= 0 || height <= 0) throw new CodecError('h264', `SPS cropping leaves ${width}x${height}`);
  return { profileIdc, constraintFlags, levelIdc, chromaFormatIdc, bitDepthLuma, bitDepthChroma, width, height };
}

const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

/** Interim: the RFC 6381 codec string (avc1.PPCCLL) of an SPS. */
export function interimAvcCodecString(info: Pick<InterimSpsInfo, 'profileIdc' | 'constraintFlags' | 'levelIdc'>): string {
  return `avc1.${hex2(info.profileIdc)}${hex2(info.constraintFlags)}${hex2(info.levelIdc)}`;
}

/** Interim: an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) with 4-byte NAL lengths. */
export function interimBuildAvcC(sps: Uint8Array, pps: Uint8Array): Buffer {
  const info = interimParseSps(sps);
  if (pps.length < 1 || (pps[0]! & 0x1f) !== NAL_PPS) throw new CodecError('h264', 'not a PPS');
  if (sps.length > 0xffff || pps.length > 0xffff) throw new CodecError('h264', 'parameter set over 65535 bytes');
  const ext = info.profileIdc === 100 || info.profileIdc === 110 || info.profileIdc === 122 || info.profileIdc === 144;
  const out = Buffer.alloc(6 + 2 + sps.length + 1 + 2 + pps.length + (ext ? 4 : 0));
  let o = 0;
  out[o++] = 1;
  out[o++] = info.profileIdc;
  out[o++] = info.constraintFlags;
  out[o++] = info.levelIdc;
  out[o++] = 0xff; // reserved, lengthSizeMinusOne = 3
  out[o++] = 0xe1; // reserved, one SPS
  out.writeUInt16BE(sps.length, o);
  o += 2;
  out.set(sps, o);
  o += sps.length;
  out[o++] = 1;
  out.writeUInt16BE(pps.length, o);
  o += 2;
  out.set(pps, o);
  o += pps.length;
  if (ext) {
    out[o++] = 0xfc | info.chromaFormatIdc;
    out[o++] = 0xf8 | (info.bitDepthLuma - 8);
    out[o++] = 0xf8 | (info.bitDepthChroma - 8);
    out[o++] = 0;
  }
  return out;
}

/** Interim implementation of what the WebRTC ingest needs from an H.264 SPS/PPS (see gateway/webrtc/rtp-ingest.ts H264Support). */
export const interimH264 = {
  describeSps(nal: Uint8Array): { width: number; height: number; codecString: string } {
    const info = interimParseSps(nal);
    return { width: info.width, height: info.height, codecString: interimAvcCodecString(info) };
  },
  buildConfig(sps: Uint8Array, pps: Uint8Array): Buffer {
    return interimBuildAvcC(sps, pps);
  },
};
