/**
 * MPEG-TS muxer for HLS: H.264 (Annex B, AUD, SPS/PPS before IDRs) and AAC (ADTS) on one program.
 *
 * Written for many streams on one event loop: the PAT, PMT, AUD, parameter sets and ADTS header are
 * built once per muxer; each call fills one exactly-sized Buffer with whole 188-byte packets, staging
 * the PES payload in a scratch buffer shared by all muxers (mux is synchronous, so it is never shared
 * by two calls at once). No objects are made per packet or per NAL unit.
 */
import { adtsHeader, parseAudioSpecificConfig } from './aac.ts';
import { CodecError } from './errors.ts';
import { NalType, parseAvcC } from './h264.ts';
import type { Sample, Track } from './track.ts';

const PACKET = 188;
const PAT_PID = 0x0000;
const PMT_PID = 0x1000;
const VIDEO_PID = 0x100;
const AUDIO_PID = 0x101;
const STREAM_TYPE_H264 = 0x1b;
const STREAM_TYPE_AAC = 0x0f;
const TS_WRAP = 2 ** 33;

function fail(reason: string): never {
  throw new CodecError('mpegts', reason);
}

// MPEG-2 CRC-32 (polynomial 0x04C11DB7, MSB first, no reflection, no final xor).
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[i] = c >>> 0;
  }
  return t;
})();

function crc32(b: Uint8Array, start: number, end: number): number {
  let crc = 0xffffffff;
  for (let i = start; i < end; i++) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ b[i]!) & 0xff]!) >>> 0;
  return crc;
}

/** One PSI packet (PAT or PMT) with the section at offset 5 and 0xff stuffing; the CC nibble is patched per use. */
function psiPacket(pid: number, section: number[]): Buffer {
  const p = Buffer.alloc(PACKET, 0xff);
  p[0] = 0x47;
  p[1] = 0x40 | (pid >>> 8);
  p[2] = pid & 0xff;
  p[3] = 0x10;
  p[4] = 0; // pointer_field
  p.set(section, 5);
  p.writeUInt32BE(crc32(p, 5, 5 + section.length), 5 + section.length);
  return p;
}

function patPacket(): Buffer {
  // section_length = 5 (header after length) + 4 (one program) + 4 (CRC)
  return psiPacket(PAT_PID, [0x00, 0xb0, 13, 0x00, 0x01, 0xc1, 0x00, 0x00, 0x00, 0x01, 0xe0 | (PMT_PID >>> 8), PMT_PID & 0xff]);
}

function pmtPacket(pcrPid: number, streams: readonly { type: number; pid: number }[]): Buffer {
  const sectionLength = 9 + 5 * streams.length + 4;
  const s = [0x02, 0xb0 | (sectionLength >>> 8), sectionLength & 0xff, 0x00, 0x01, 0xc1, 0x00, 0x00, 0xe0 | (pcrPid >>> 8), pcrPid & 0xff, 0xf0, 0x00];
  for (const st of streams) s.push(st.type, 0xe0 | (st.pid >>> 8), st.pid & 0xff, 0xf0, 0x00);
  return psiPacket(PMT_PID, s);
}

/** Scratch for PES payloads, shared by all muxers; grows to the largest access unit seen. */
let scratch = Buffer.allocUnsafe(256 * 1024);
function scratchOf(size: number): Buffer {
  if (scratch.length < size) scratch = Buffer.allocUnsafe(Math.max(size, scratch.length * 2));
  return scratch;
}

function wrap33(t: number): number {
  const m = t % TS_WRAP;
  return m < 0 ? m + TS_WRAP : m;
}

/** Writes a 5-byte PTS or DTS field with the 4-bit prefix; `t` is already within 33 bits. */
function writeTimestamp(b: Buffer, off: number, prefix: number, t: number): void {
  const high = Math.floor(t / 2 ** 30); // 3 bits
  const low = t - high * 2 ** 30; // 30 bits, fits bitwise ops
  b[off] = (prefix << 4) | (high << 1) | 1;
  b[off + 1] = low >>> 22;
  b[off + 2] = ((low >>> 14) & 0xfe) | 1;
  b[off + 3] = (low >>> 7) & 0xff;
  b[off + 4] = ((low << 1) & 0xfe) | 1;
}

interface TrackState {
  readonly pid: number;
  readonly streamId: number;
  readonly video: boolean;
  /** Annex B SPS+PPS from avcC (video only). */
  readonly parameterSets: Buffer;
  /** ADTS header template with a zero frame length (audio only). */
  readonly adts: Buffer;
  cc: number;
}

const AUD = Buffer.from([0, 0, 0, 1, NalType.AUD, 0xf0]);

export class TsMuxer {
  private readonly states = new Map<number, TrackState>();
  private readonly pat = patPacket();
  private readonly pmt: Buffer;
  private readonly pcrPid: number;
  private readonly hasVideo: boolean;
  private patCc = 0;
  private pmtCc = 0;
  private started = false;

  constructor(tracks: readonly Track[]) {
    if (tracks.length === 0) fail('no tracks to mux');
    let video: Track | undefined;
    let audio: Track | undefined;
    for (const t of tracks) {
      if (this.states.has(t.id)) fail(`track id ${t.id} appears twice`);
      if (t.kind === 'video') {
        if (t.codec !== 'h264') fail(`video codec ${t.codec} is not supported in MPEG-TS (only h264)`);
        if (video) fail('more than one video track');
        video = t;
        const cfg = parseAvcC(t.config);
        const sets = [...cfg.sps, ...cfg.pps];
        const ps = Buffer.allocUnsafe(sets.reduce((n, s) => n + 4 + s.length, 0));
        let off = 0;
        for (const s of sets) {
          off = ps.writeUInt32BE(1, off);
          off += s.copy(ps, off);
        }
        this.states.set(t.id, { pid: VIDEO_PID, streamId: 0xe0, video: true, parameterSets: ps, adts: Buffer.alloc(0), cc: 0 });
      } else {
        if (t.codec !== 'aac') fail(`audio codec ${t.codec} is not supported in MPEG-TS (only aac)`);
        if (audio) fail('more than one audio track');
        audio = t;
        const adts = adtsHeader(parseAudioSpecificConfig(t.config), 0);
        this.states.set(t.id, { pid: AUDIO_PID, streamId: 0xc0, video: false, parameterSets: Buffer.alloc(0), adts, cc: 0 });
      }
    }
    this.hasVideo = video !== undefined;
    this.pcrPid = video ? VIDEO_PID : AUDIO_PID;
    const streams: { type: number; pid: number }[] = [];
    if (video) streams.push({ type: STREAM_TYPE_H264, pid: VIDEO_PID });
    if (audio) streams.push({ type: STREAM_TYPE_AAC, pid: AUDIO_PID });
    this.pmt = pmtPacket(this.pcrPid, streams);
  }

  /**
   * Bytes for one sample, as whole 188-byte packets: PAT+PMT first at the start and at every video
   * keyframe (every audio sample when there is no video, since any of them may start a segment), then
   * one PES with PTS (and DTS when it differs), wrapped to 33 bits. The PCR rides the first packet of
   * each PES on the PCR PID (video when present), equal to the DTS.
   */
  mux(sample: Sample): Buffer {
    const st = this.states.get(sample.track);
    if (!st) fail(`sample for unknown track ${sample.track}`);
    const { dts, pts } = sample;
    if (!Number.isSafeInteger(dts) || dts < 0) fail(`DTS ${dts} is not a non-negative integer`);
    if (!Number.isSafeInteger(pts) || pts < dts) fail(`PTS ${pts} is not an integer >= DTS ${dts}`);

    // Stage the PES header and payload in scratch.
    const data = sample.data;
    let buf: Buffer;
    let len: number;
    const headerLen = pts === dts ? 14 : 19;
    if (st.video) {
      // Scan: check every length and find IDR / in-band SPS / AUD before writing.
      if (data.length === 0) fail('empty video sample');
      let hasIdr = false;
      let hasSps = false;
      let dropped = 0;
      let off = 0;
      while (off < data.length) {
        if (data.length - off < 4) fail(`truncated NAL length prefix at offset ${off}`);
        const n = ((data[off]! << 24) | (data[off + 1]! << 16) | (data[off + 2]! << 8) | data[off + 3]!) >>> 0;
        if (n === 0) fail(`zero-length NAL unit at offset ${off}`);
        if (n > data.length - off - 4) fail(`NAL length ${n} at offset ${off} exceeds the ${data.length - off - 4} bytes left`);
        const type = data[off + 4]! & 0x1f;
        if (type === NalType.IDR) hasIdr = true;
        else if (type === NalType.SPS) hasSps = true;
        else if (type === NalType.AUD) dropped += 4 + n;
        off += 4 + n;
      }
      const withSets = (hasIdr || sample.keyframe) && !hasSps;
      len = headerLen + AUD.length + (withSets ? st.parameterSets.length : 0) + data.length - dropped;
      buf = scratchOf(len);
      let w = headerLen;
      w += AUD.copy(buf, w);
      if (withSets) w += st.parameterSets.copy(buf, w);
      off = 0;
      while (off < data.length) {
        const n = ((data[off]! << 24) | (data[off + 1]! << 16) | (data[off + 2]! << 8) | data[off + 3]!) >>> 0;
        if ((data[off + 4]! & 0x1f) !== NalType.AUD) {
          buf[w] = 0;
          buf[w + 1] = 0;
          buf[w + 2] = 0;
          buf[w + 3] = 1;
          buf.set(data.subarray(off + 4, off + 4 + n), w + 4);
          w += 4 + n;
        }
        off += 4 + n;
      }
    } else {
      const frameLength = 7 + data.length;
      if (data.length === 0) fail('empty audio sample');
      if (frameLength > 0x1fff) fail(`AAC access unit of ${data.length} bytes does not fit in one ADTS frame`);
      len = headerLen + frameLength;
      buf = scratchOf(len);
      const h = headerLen;
      st.adts.copy(buf, h);
      buf[h + 3] = (buf[h + 3]! & 0xfc) | (frameLength >>> 11);
      buf[h + 4] = (frameLength >>> 3) & 0xff;
      buf[h + 5] = ((frameLength & 7) << 5) | (buf[h + 5]! & 0x1f);
      buf.set(data, h + 7);
    }

    // PES header.
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = 1;
    buf[3] = st.streamId;
    const pesLength = len - 6;
    buf.writeUInt16BE(pesLength <= 0xffff ? pesLength : 0, 4); // 0 = unbounded, allowed for video only
    if (pesLength > 0xffff && !st.video) fail(`audio PES of ${pesLength} bytes exceeds 65535`);
    buf[6] = 0x84; // marker bits, data_alignment_indicator
    buf[7] = pts === dts ? 0x80 : 0xc0;
    buf[8] = headerLen - 9;
    writeTimestamp(buf, 9, pts === dts ? 0x2 : 0x3, wrap33(pts));
    if (pts !== dts) writeTimestamp(buf, 14, 0x1, wrap33(dts));

    // Packetize into one exactly-sized output.
    const withTables = !this.started || (sample.keyframe && (st.video || !this.hasVideo));
    const withPcr = st.pid === this.pcrPid;
    const randomAccess = sample.keyframe;
    const firstAf = withPcr || randomAccess ? (withPcr ? 8 : 2) : 0;
    const firstPayload = PACKET - 4 - firstAf;
    const packets = len <= firstPayload ? 1 : 1 + Math.ceil((len - firstPayload) / (PACKET - 4));
    const out = Buffer.allocUnsafe((packets + (withTables ? 2 : 0)) * PACKET);
    let o = 0;
    if (withTables) {
      this.pat.copy(out, 0);
      out[3] = 0x10 | this.patCc;
      this.patCc = (this.patCc + 1) & 0xf;
      this.pmt.copy(out, PACKET);
      out[PACKET + 3] = 0x10 | this.pmtCc;
      this.pmtCc = (this.pmtCc + 1) & 0xf;
      o = 2 * PACKET;
      this.started = true;
    }
    let r = 0;
    let first = true;
    while (r < len) {
      const remaining = len - r;
      let af = first ? firstAf : 0;
      const space = PACKET - 4 - af;
      const chunk = remaining < space ? remaining : space;
      const stuffing = space - chunk;
      af += stuffing; // the last packet: grow (or add) the adaptation field to fill it
      out[o] = 0x47;
      out[o + 1] = (first ? 0x40 : 0) | (st.pid >>> 8);
      out[o + 2] = st.pid & 0xff;
      out[o + 3] = (af > 0 ? 0x30 : 0x10) | st.cc;
      st.cc = (st.cc + 1) & 0xf;
      let p = o + 4;
      if (af > 0) {
        out[p] = af - 1; // adaptation_field_length
        if (af > 1) {
          const flagged = first && firstAf > 0;
          out[p + 1] = flagged ? (randomAccess ? 0x40 : 0) | (withPcr ? 0x10 : 0) : 0;
          let q = p + 2;
          if (flagged && withPcr) {
            const base = wrap33(dts);
            const hi = Math.floor(base / 2); // the upper 32 bits of the 33-bit base
            out[q] = hi >>> 24;
            out[q + 1] = (hi >>> 16) & 0xff;
            out[q + 2] = (hi >>> 8) & 0xff;
            out[q + 3] = hi & 0xff;
            out[q + 4] = ((base % 2) << 7) | 0x7e; // reserved bits, extension 0
            out[q + 5] = 0;
            q += 6;
          }
          out.fill(0xff, q, p + af);
        }
        p += af;
      }
      buf.copy(out, p, r, r + chunk);
      r += chunk;
      o += PACKET;
      first = false;
    }
    return out;
  }
}
