/**
 * Pre-encoded H.264 (Annex B) and Opus (Ogg) turned into RTP once, and replayed in real time as a
 * loop for many WHIP senders: each tick, the packets that came due are serialized once and the same
 * buffers go to every sender (werift gives each sender its own SSRC, sequence and timestamp offsets).
 * H.264 is packetized as RFC 6184 mode 1 (single NAL units and FU-A), Opus as RFC 7587.
 */
import { splitAnnexB } from '../codecs/h264.ts';
import { TickFeed } from './tick-feed.ts';

export const RTP_MTU_PAYLOAD = 1200;

/** One RTP payload of the clip, with its time in the clip. */
export interface ClipPacket {
  /** RTP timestamp units from the clip's start (90 kHz video, 48 kHz Opus). */
  ts: number;
  /** Milliseconds from the clip's start, for scheduling. */
  ms: number;
  marker: boolean;
  payload: Buffer;
  /** The first packet of an access unit with an IDR: where a sender may join. */
  keyframeStart: boolean;
}

/** Groups Annex B NAL units into access units (a new one starts at AUD/SPS/PPS/SEI after a slice, or at a slice with first_mb 0). */
export function accessUnits(annexB: Buffer): Buffer[][] {
  const aus: Buffer[][] = [];
  let cur: Buffer[] = [];
  let hasSlice = false;
  for (const nal of splitAnnexB(annexB)) {
    const type = nal[0]! & 0x1f;
    const slice = type === 1 || type === 5;
    const firstMb = slice && nal.length > 1 && (nal[1]! & 0x80) !== 0;
    if (hasSlice && ((type >= 6 && type <= 9) || firstMb)) {
      aus.push(cur);
      cur = [];
      hasSlice = false;
    }
    if (type === 9) continue; // access unit delimiters are not sent over RTP by browsers
    cur.push(nal);
    if (slice) hasSlice = true;
  }
  if (cur.length > 0 && hasSlice) aus.push(cur);
  return aus;
}

/** RFC 6184 payloads for one access unit: each NAL alone if it fits, else split into FU-A fragments. */
export function packetizeH264(au: readonly Buffer[], mtu = RTP_MTU_PAYLOAD): Buffer[] {
  const out: Buffer[] = [];
  for (const nal of au) {
    if (nal.length <= mtu) {
      out.push(nal);
      continue;
    }
    const hdr = nal[0]!;
    const indicator = (hdr & 0xe0) | 28;
    const type = hdr & 0x1f;
    for (let pos = 1; pos < nal.length; pos += mtu - 2) {
      const end = Math.min(nal.length, pos + mtu - 2);
      const fu = Buffer.allocUnsafe(2 + end - pos);
      fu[0] = indicator;
      fu[1] = (pos === 1 ? 0x80 : 0) | (end === nal.length ? 0x40 : 0) | type;
      nal.copy(fu, 2, pos, end);
      out.push(fu);
    }
  }
  return out;
}

/** The packets of an Ogg stream (pages reassembled by their lacing values), every length checked. */
export function oggPackets(file: Buffer): Buffer[] {
  const packets: Buffer[] = [];
  let partial: Buffer[] = [];
  let pos = 0;
  while (pos + 27 <= file.length) {
    if (file.toString('latin1', pos, pos + 4) !== 'OggS') throw new Error(`no Ogg page at offset ${pos}`);
    const nseg = file[pos + 26]!;
    if (pos + 27 + nseg > file.length) throw new Error('truncated Ogg segment table');
    const lacing = file.subarray(pos + 27, pos + 27 + nseg);
    let body = pos + 27 + nseg;
    const total = lacing.reduce((a, b) => a + b, 0);
    if (body + total > file.length) throw new Error('truncated Ogg page');
    for (const len of lacing) {
      partial.push(file.subarray(body, body + len));
      body += len;
      if (len < 255) {
        packets.push(Buffer.concat(partial));
        partial = [];
      }
    }
    pos = body;
  }
  return packets;
}

/** Samples at 48 kHz in one Opus packet, from its TOC byte (RFC 6716 section 3.1). */
export function opusSamples(packet: Uint8Array): number {
  const toc = packet[0] ?? 0;
  const config = toc >> 3;
  const frameMs10 =
    config < 12 ? [100, 200, 400, 600][config % 4]! : config < 16 ? [100, 200][config % 2]! : [25, 50, 100, 200][config % 4]!;
  const code = toc & 3;
  const frames = code === 0 ? 1 : code === 1 || code === 2 ? 2 : (packet[1] ?? 0) & 0x3f;
  return (frameMs10 * 48 * frames) / 10;
}

export interface RtpClip {
  video: ClipPacket[];
  audio: ClipPacket[];
  /** Loop period in ms: the longer track's duration. */
  periodMs: number;
  videoFrames: number;
  audioFrames: number;
  bitsPerSecond: number;
}

export function buildRtpClip(h264: Buffer, ogg: Buffer, fps: number): RtpClip {
  const video: ClipPacket[] = [];
  const aus = accessUnits(h264);
  const firstKey = aus.findIndex((au) => au.some((n) => (n[0]! & 0x1f) === 5));
  if (firstKey < 0) throw new Error('the H.264 clip has no IDR');
  const usable = aus.slice(firstKey);
  usable.forEach((au, i) => {
    const ts = Math.round((i * 90_000) / fps);
    const key = au.some((n) => (n[0]! & 0x1f) === 5);
    const payloads = packetizeH264(au);
    payloads.forEach((payload, j) =>
      video.push({ ts, ms: (i * 1000) / fps, marker: j === payloads.length - 1, payload, keyframeStart: key && j === 0 }),
    );
  });
  const audio: ClipPacket[] = [];
  let samples = 0;
  for (const p of oggPackets(ogg)) {
    if (p.length < 1 || p.subarray(0, 8).toString('latin1') === 'OpusHead' || p.subarray(0, 8).toString('latin1') === 'OpusTags') continue;
    audio.push({ ts: samples, ms: samples / 48, marker: false, payload: p, keyframeStart: false });
    samples += opusSamples(p);
  }
  const videoMs = (usable.length * 1000) / fps;
  const periodMs = Math.max(videoMs, samples / 48);
  const bytes = [...video, ...audio].reduce((a, p) => a + p.payload.length, 0);
  return { video, audio, periodMs, videoFrames: usable.length, audioFrames: audio.length, bitsPerSecond: (bytes * 8 * 1000) / periodMs };
}

/** A serialized RTP packet (SSRC 0; werift's sender sets SSRC, payload type and offsets). */
export function rtpPacket(payloadType: number, seq: number, ts: number, marker: boolean, payload: Buffer): Buffer {
  const b = Buffer.allocUnsafe(12 + payload.length);
  b[0] = 0x80;
  b[1] = (marker ? 0x80 : 0) | (payloadType & 0x7f);
  b.writeUInt16BE(seq & 0xffff, 2);
  b.writeUInt32BE(ts >>> 0, 4);
  b.writeUInt32BE(0, 8);
  payload.copy(b, 12);
  return b;
}

export interface RtpTick {
  video: Buffer[];
  audio: Buffer[];
  /** Index in `video` of the first packet of a keyframe, or -1. */
  keyframeAt: number;
}

export interface RtpSubscriber {
  onTick(tick: RtpTick): void;
}

/** One clock for every WHIP sender: each tick the due packets are serialized once and shared. */
export class RtpFeed extends TickFeed<RtpSubscriber> {
  readonly clip: RtpClip;
  #vi = 0;
  #ai = 0;
  #vloop = 0;
  #aloop = 0;
  #vseq = 0;
  #aseq = 0;
  packetsPerSubscriber = 0;

  constructor(clip: RtpClip, opts: { tickMs?: number; maxMs: number }) {
    super(opts.tickMs ?? 20, opts.maxMs);
    this.clip = clip;
  }

  /** The packets due up to `untilMs` of media time (also used by tests without a timer). */
  take(untilMs: number): RtpTick {
    const c = this.clip;
    const tick: RtpTick = { video: [], audio: [], keyframeAt: -1 };
    for (let n = 0; n < 100_000; n++) {
      const p = c.video[this.#vi]!;
      if (this.#vloop * c.periodMs + p.ms > untilMs) break;
      if (p.keyframeStart && tick.keyframeAt < 0) tick.keyframeAt = tick.video.length;
      const ts = p.ts + Math.round((this.#vloop * c.periodMs * 90_000) / 1000);
      tick.video.push(rtpPacket(96, this.#vseq++, ts, p.marker, p.payload));
      if (++this.#vi === c.video.length) {
        this.#vi = 0;
        this.#vloop++;
      }
    }
    for (let n = 0; n < 100_000; n++) {
      const p = c.audio[this.#ai]!;
      if (this.#aloop * c.periodMs + p.ms > untilMs) break;
      const ts = p.ts + Math.round((this.#aloop * c.periodMs * 48_000) / 1000);
      tick.audio.push(rtpPacket(111, this.#aseq++, ts, false, p.payload));
      if (++this.#ai === c.audio.length) {
        this.#ai = 0;
        this.#aloop++;
      }
    }
    return tick;
  }

  protected override onTick(elapsed: number): void {
    const tick = this.take(elapsed);
    if (tick.video.length + tick.audio.length > 0) {
      this.packetsPerSubscriber += tick.video.length + tick.audio.length;
      for (const s of this.subs) s.onTick(tick);
    }
  }
}
