/**
 * H.264 over RTP (RFC 6184, packetization-mode 1): single NAL unit packets, STAP-A and FU-A are
 * reassembled into whole access units (closed by the marker bit or a new timestamp), and access
 * units are written as AVCC (4-byte lengths). Pure code over bytes: no I/O, no timers.
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
