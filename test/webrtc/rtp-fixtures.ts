/**
 * Test material for RTP: a seeded PRNG, an RTP serializer, an H.264 RTP packetizer (single NAL,
 * STAP-A, FU-A as RFC 6184 mode 1 senders do), and real SPS/PPS from x264.
 */
import type { RtpPacket } from '../../codecs/rtp.ts';
import { prng } from '../helpers/prng.ts';

export function randomBytes(rand: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(rand() * 256);
  return b;
}

export const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/** x264 parameter sets (ffmpeg testsrc2), with the sizes their SPS says. */
export const PARAMS = {
  baseline640x360: {
    sps: hex('6742c01ed900a02ff970110000030001000003003c0f162e48'),
    pps: hex('68cb83cb20'),
    width: 640,
    height: 360,
    codecString: 'avc1.42c01e',
  },
  main1280x720: {
    sps: hex('674d401feca02802dd8088000003000800000301e078c18cb0'),
    pps: hex('68ebe3cb20'),
    width: 1280,
    height: 720,
    codecString: 'avc1.4d401f',
  },
  high1920x1080: {
    sps: hex('67640028acd940780227e5c044000003000400000300f03c60c658'),
    pps: hex('68ebe3cb22c0'),
    width: 1920,
    height: 1080,
    codecString: 'avc1.640028',
  },
  high854x480: {
    sps: hex('6764001facd940d83de6f0110000030001000003003c0f183196'),
    pps: hex('68ebe3cb22c0'),
    width: 854,
    height: 480,
    codecString: 'avc1.64001f',
  },
  high422_640x480: {
    sps: hex('677a001ebcd940a03db0110000030001000003003c0f162d96'),
    pps: hex('68ebe3cb22c0'),
    width: 640,
    height: 480,
    codecString: 'avc1.7a001e',
  },
  interlaced720x576: {
    sps: hex('6764001eacd940b424d8088000000300800000190f8a14cb'),
    pps: hex('68ebe3cb22c0'),
    width: 720,
    height: 576,
    codecString: 'avc1.64001e',
  },
} as const;

/** A NAL unit of `size` bytes: header (nri, type), then PRNG bytes. */
export function nal(type: number, size: number, rand: () => number = prng(type * 7919 + size), nri = 3): Uint8Array {
  const b = randomBytes(rand, size);
  b[0] = (nri << 5) | type;
  return b;
}

export interface PacketizeOptions {
  seq: number;
  ts: number;
  ssrc?: number;
  pt?: number;
  mtu?: number;
  /** Aggregate small NAL units into STAP-A (default true). */
  stap?: boolean;
  /** Set the marker bit on the last packet (default true). */
  marker?: boolean;
}

export interface TestRtpPacket extends RtpPacket {
  readonly sequenceNumber: number;
}

/** Packetizes one access unit as RFC 6184 packetization-mode 1. Sequence numbers wrap at 65535. */
export function packetizeH264(nalus: readonly Uint8Array[], o: PacketizeOptions): TestRtpPacket[] {
  const mtu = o.mtu ?? 1200;
  const payloads: Uint8Array[] = [];
  let i = 0;
  while (i < nalus.length) {
    const n = nalus[i]!;
    if (n.length > mtu) {
      const indicator = (n[0]! & 0xe0) | 28;
      const type = n[0]! & 0x1f;
      const body = n.subarray(1);
      for (let off = 0; off < body.length; off += mtu - 2) {
        const chunk = body.subarray(off, Math.min(body.length, off + mtu - 2));
        const start = off === 0;
        const end = off + mtu - 2 >= body.length;
        const p = new Uint8Array(2 + chunk.length);
        p[0] = indicator;
        p[1] = (start ? 0x80 : 0) | (end ? 0x40 : 0) | type;
        p.set(chunk, 2);
        payloads.push(p);
      }
      i++;
      continue;
    }
    // Aggregate as many following small NAL units as fit.
    let j = i;
    let size = 1;
    while (o.stap !== false && j < nalus.length && nalus[j]!.length <= mtu && size + 2 + nalus[j]!.length <= mtu) {
      size += 2 + nalus[j]!.length;
      j++;
    }
    if (j - i >= 2) {
      const p = new Uint8Array(size);
      let nri = 0;
      let off = 1;
      for (let k = i; k < j; k++) {
        const m = nalus[k]!;
        nri = Math.max(nri, m[0]! & 0x60);
        p[off] = m.length >> 8;
        p[off + 1] = m.length & 0xff;
        p.set(m, off + 2);
        off += 2 + m.length;
      }
      p[0] = nri | 24;
      payloads.push(p);
      i = j;
    } else {
      payloads.push(n);
      i++;
    }
  }
  return payloads.map((payload, k) => ({
    payloadType: o.pt ?? 102,
    sequenceNumber: (o.seq + k) & 0xffff,
    timestamp: o.ts >>> 0,
    ssrc: o.ssrc ?? 0x1234,
    marker: o.marker !== false && k === payloads.length - 1,
    payload,
  }));
}

export interface SerializeOptions {
  csrcs?: number[];
  extension?: { profile: number; data: Uint8Array };
  padding?: number;
}

/** Writes an RTP packet (RFC 3550 5.1). */
export function serializeRtp(p: RtpPacket, o: SerializeOptions = {}): Uint8Array {
  const csrcs = o.csrcs ?? [];
  const extLen = o.extension ? 4 + o.extension.data.length : 0;
  const pad = o.padding ?? 0;
  const b = new Uint8Array(12 + 4 * csrcs.length + extLen + p.payload.length + pad);
  const v = new DataView(b.buffer);
  b[0] = 0x80 | (pad ? 0x20 : 0) | (o.extension ? 0x10 : 0) | csrcs.length;
  b[1] = (p.marker ? 0x80 : 0) | p.payloadType;
  v.setUint16(2, p.sequenceNumber);
  v.setUint32(4, p.timestamp >>> 0);
  v.setUint32(8, p.ssrc >>> 0);
  let off = 12;
  for (const c of csrcs) {
    v.setUint32(off, c);
    off += 4;
  }
  if (o.extension) {
    v.setUint16(off, o.extension.profile);
    v.setUint16(off + 2, o.extension.data.length / 4);
    b.set(o.extension.data, off + 4);
    off += extLen;
  }
  b.set(p.payload, off);
  off += p.payload.length;
  if (pad) b[b.length - 1] = pad;
  return b;
}

/** An Opus packet (code 0) of 20 ms CELT fullband with `size` bytes. */
export function opusPacket(size = 60, seed = 1): Uint8Array {
  const b = randomBytes(prng(seed), size);
  b[0] = (31 << 3) | 0; // config 31: CELT FB 20 ms, mono, code 0
  return b;
}
