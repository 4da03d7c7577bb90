/**
 * Fragmented MP4 (CMAF) for HLS and LL-HLS: an init segment (ftyp + moov) and media segments
 * (moof + mdat). Samples carry 90 kHz DTS/PTS; each track's media timescale is 90000 for video and
 * its sample rate for audio, and times are converted per sample from the absolute DTS so that the
 * durations of consecutive segments add up without drift. Bad input throws CodecError('fmp4', reason).
 */
import { CodecError } from './errors.ts';
import { parseAvcC } from './h264.ts';
import { CLOCK_RATE, type Sample, type Track } from './track.ts';

function fail(reason: string): never {
  throw new CodecError('fmp4', reason);
}

// ---------------------------------------------------------------------------------------------------
// Box building for the init segment (small, built once per track configuration).

type Part = Buffer | readonly number[];

function bytes(p: Part): Buffer {
  return Buffer.isBuffer(p) ? p : Buffer.from(p as number[]);
}

function box(type: string, ...parts: Part[]): Buffer {
  const body = Buffer.concat(parts.map(bytes));
  const head = Buffer.allocUnsafe(8);
  head.writeUInt32BE(8 + body.length, 0);
  head.write(type, 4, 'latin1');
  return Buffer.concat([head, body]);
}

function fullBox(type: string, version: number, flags: number, ...parts: Part[]): Buffer {
  return box(type, [version, (flags >>> 16) & 0xff, (flags >>> 8) & 0xff, flags & 0xff], ...parts);
}

function u16(v: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(v);
  return b;
}

function u32(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

const MATRIX = Buffer.concat([0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000].map(u32));
const ZERO = (n: number) => Buffer.alloc(n);

function timescaleOf(t: Track): number {
  if (t.kind === 'video') return CLOCK_RATE;
  if (!Number.isInteger(t.sampleRate) || t.sampleRate < 1 || t.sampleRate > 0xffffffff) {
    fail(`track ${t.id} sample rate ${t.sampleRate} is not a positive integer`);
  }
  return t.sampleRate;
}

function checkTrackId(t: Track): void {
  if (!Number.isInteger(t.id) || t.id < 1 || t.id > 0xffffffff) fail(`track id ${t.id} is not a valid MP4 track_ID (1..2^32-1)`);
}

function visualEntry(type: string, t: Track & { kind: 'video' }, config: Buffer): Buffer {
  if (!Number.isInteger(t.width) || !Number.isInteger(t.height) || t.width < 1 || t.height < 1 || t.width > 0xffff || t.height > 0xffff) {
    fail(`track ${t.id} size ${t.width}x${t.height} is out of range`);
  }
  return box(
    type,
    ZERO(6),
    u16(1), // data_reference_index
    ZERO(16), // pre_defined, reserved, pre_defined[3]
    u16(t.width),
    u16(t.height),
    u32(0x00480000), // 72 dpi
    u32(0x00480000),
    u32(0),
    u16(1), // frame_count
    ZERO(32), // compressorname
    u16(0x0018),
    u16(0xffff), // pre_defined = -1
    config,
  );
}

function audioEntry(type: string, t: Track & { kind: 'audio' }, config: Buffer): Buffer {
  if (!Number.isInteger(t.channels) || t.channels < 1 || t.channels > 255) fail(`track ${t.id} channel count ${t.channels} is out of range`);
  return box(
    type,
    ZERO(6),
    u16(1), // data_reference_index
    ZERO(8), // reserved
    u16(t.channels),
    u16(16), // samplesize
    ZERO(4), // pre_defined, reserved
    u32(t.sampleRate <= 0xffff ? t.sampleRate * 0x10000 : 0), // 16.16; 0 when it does not fit (the timescale is authoritative)
    config,
  );
}

/** An MPEG-4 descriptor: tag, then the size in the 1-to-4-byte form with continuation bits. */
function descriptor(tag: number, body: Buffer): Buffer {
  const n = body.length;
  if (n >= 2 ** 28) fail('descriptor too large');
  const size: number[] = [];
  for (let shift = 21; shift > 0; shift -= 7) if (n >= 2 ** shift) size.push(0x80 | ((n >>> shift) & 0x7f));
  size.push(n & 0x7f);
  return Buffer.concat([Buffer.from([tag, ...size]), body]);
}

function esds(asc: Buffer): Buffer {
  const decSpecific = descriptor(0x05, asc);
  const decoderConfig = descriptor(
    0x04,
    Buffer.concat([
      Buffer.from([0x40, 0x15]), // objectTypeIndication: MPEG-4 audio; streamType audio (5 << 2 | 1)
      Buffer.from([0, 0, 0]), // bufferSizeDB
      u32(0), // maxBitrate
      u32(0), // avgBitrate
      decSpecific,
    ]),
  );
  const es = descriptor(0x03, Buffer.concat([u16(0), Buffer.from([0]), decoderConfig, descriptor(0x06, Buffer.from([0x02]))]));
  return fullBox('esds', 0, 0, es);
}

/** dOps (Opus in ISO BMFF, 4.3.2) from an OpusHead (RFC 7845 5.1: little-endian fields). */
function dOps(t: Track, head: Buffer): Buffer {
  if (head.length < 19 || head.toString('latin1', 0, 8) !== 'OpusHead') fail(`track ${t.id} config is not an OpusHead`);
  if (head[8]! >>> 4 !== 0) fail(`track ${t.id} OpusHead version ${head[8]} is not 0.x`);
  const channels = head[9]!;
  if (channels === 0) fail(`track ${t.id} OpusHead has 0 channels`);
  const family = head[18]!;
  const out = [0, channels, ...u16(head.readUInt16LE(10)), ...u32(head.readUInt32LE(12)), ...u16(head.readUInt16LE(16)), family];
  if (family !== 0) {
    const need = 21 + channels;
    if (head.length < need) fail(`track ${t.id} OpusHead channel mapping needs ${need} bytes, has ${head.length}`);
    out.push(...head.subarray(19, need));
  } else if (channels > 2) {
    fail(`track ${t.id} OpusHead mapping family 0 with ${channels} channels`);
  }
  return box('dOps', out);
}

function sampleEntry(t: Track): Buffer {
  if (t.kind === 'video') {
    if (t.codec === 'h264') {
      parseAvcC(t.config); // throws CodecError('h264', ...) when malformed
      const avcC = Buffer.from(t.config);
      avcC[4] = 0xff; // samples carry 4-byte NAL lengths whatever the record said
      // avc3: parameter sets may also travel in the samples, so a reader that keeps the first init
      // segment across a resolution change (ffmpeg's HLS demuxer) still decodes what follows.
      return visualEntry('avc3', t, box('avcC', avcC));
    }
    if (t.config.length < 23 || t.config[0] !== 1) fail(`track ${t.id} hvcC is malformed (${t.config.length} bytes, version ${t.config[0]})`);
    const hvcC = Buffer.from(t.config);
    hvcC[21] = (hvcC[21]! & 0xfc) | 3; // 4-byte NAL lengths
    return visualEntry('hvc1', t, box('hvcC', hvcC));
  }
  if (t.codec === 'aac') {
    if (t.config.length < 2) fail(`track ${t.id} AudioSpecificConfig is too short`);
    return audioEntry('mp4a', t, esds(t.config));
  }
  return audioEntry('Opus', t, dOps(t, t.config));
}

function trak(t: Track): Buffer {
  const video = t.kind === 'video';
  const tkhd = fullBox(
    'tkhd',
    0,
    3, // enabled, in movie
    u32(0),
    u32(0),
    u32(t.id),
    u32(0),
    u32(0), // duration
    ZERO(8),
    u16(0), // layer
    u16(0), // alternate_group
    u16(video ? 0 : 0x0100), // volume
    u16(0),
    MATRIX,
    u32(video ? t.width * 0x10000 : 0),
    u32(video ? t.height * 0x10000 : 0),
  );
  const mdhd = fullBox('mdhd', 0, 0, u32(0), u32(0), u32(timescaleOf(t)), u32(0), u16(0x55c4 /* und */), u16(0));
  const hdlr = fullBox('hdlr', 0, 0, u32(0), Buffer.from(video ? 'vide' : 'soun', 'latin1'), ZERO(12), Buffer.from(video ? 'VideoHandler\0' : 'SoundHandler\0', 'latin1'));
  const header = video ? fullBox('vmhd', 0, 1, ZERO(8)) : fullBox('smhd', 0, 0, ZERO(4));
  const dinf = box('dinf', fullBox('dref', 0, 0, u32(1), fullBox('url ', 0, 1)));
  const stbl = box(
    'stbl',
    fullBox('stsd', 0, 0, u32(1), sampleEntry(t)),
    fullBox('stts', 0, 0, u32(0)),
    fullBox('stsc', 0, 0, u32(0)),
    fullBox('stsz', 0, 0, u32(0), u32(0)),
    fullBox('stco', 0, 0, u32(0)),
  );
  return box('trak', tkhd, box('mdia', mdhd, hdlr, box('minf', header, dinf, stbl)));
}

/** ftyp (iso6, compatible iso6/cmfc/isom) + moov (mvhd, one trak per track, mvex with a trex per track). */
export function initSegment(tracks: readonly Track[]): Buffer {
  if (tracks.length === 0) fail('no tracks');
  const ids = new Set<number>();
  for (const t of tracks) {
    checkTrackId(t);
    if (ids.has(t.id)) fail(`track id ${t.id} appears twice`);
    ids.add(t.id);
  }
  const nextId = Math.max(...ids) + 1;
  const ftyp = box('ftyp', Buffer.from('iso6', 'latin1'), u32(0), Buffer.from('iso6cmfcisom', 'latin1'));
  const mvhd = fullBox(
    'mvhd',
    0,
    0,
    u32(0),
    u32(0),
    u32(1000), // movie timescale
    u32(0), // duration: unknown (fragmented)
    u32(0x00010000), // rate 1.0
    u16(0x0100), // volume 1.0
    ZERO(10),
    MATRIX,
    ZERO(24),
    u32(nextId > 0xffffffff ? 0xffffffff : nextId),
  );
  const trex = tracks.map((t) => fullBox('trex', 0, 0, u32(t.id), u32(1), u32(0), u32(0), u32(0)));
  return Buffer.concat([ftyp, box('moov', mvhd, ...tracks.map(trak), box('mvex', ...trex))]);
}

// ---------------------------------------------------------------------------------------------------
// Media segments: sizes computed first, then written into one buffer.

/** 90 kHz time to `scale` units, exactly for any safe integer (no intermediate overflow). */
function toScale(t: number, scale: number): number {
  if (scale === CLOCK_RATE) return t;
  const q = Math.floor(t / CLOCK_RATE);
  return q * scale + Math.round(((t - q * CLOCK_RATE) * scale) / CLOCK_RATE);
}

/** Samples (at 48 kHz) in an Opus packet, from its TOC byte (RFC 6716 3.1); 0 when unreadable. */
function opusSamples(p: Uint8Array): number {
  const toc = p[0];
  if (toc === undefined) return 0;
  const config = toc >>> 3;
  const frame = config < 12 ? [480, 960, 1920, 2880][config & 3]! : config < 16 ? [480, 960][config & 1]! : [120, 240, 480, 960][config & 3]!;
  const code = toc & 3;
  const frames = code === 0 ? 1 : code === 3 ? (p[1] ?? 0) & 0x3f : 2;
  return frame * frames;
}

const SYNC = 0x02000000; // sample_depends_on = 2 (no other sample)
const NON_SYNC = 0x01010000; // sample_depends_on = 1, sample_is_non_sync_sample

const TRUN_FLAGS_BASE = 0x000001 | 0x000100 | 0x000200 | 0x000400; // data offset, duration, size, flags
const TRUN_CTO = 0x000800;

export interface SegmentPart {
  track: Track;
  samples: readonly Sample[];
  /** DTS (90 kHz) of the sample that follows this part, for the last sample's duration. */
  nextDts?: number;
}

interface Plan {
  track: Track;
  samples: readonly Sample[];
  base: number;
  durations: number[];
  ctos: number[];
  withCto: boolean;
  dataSize: number;
  trafSize: number;
}

function plan(part: SegmentPart): Plan {
  const { track, samples } = part;
  checkTrackId(track);
  const scale = timescaleOf(track);
  const n = samples.length;
  const durations: number[] = new Array<number>(n);
  const ctos: number[] = new Array<number>(n);
  let withCto = false;
  let dataSize = 0;
  let prevDts = -1;
  for (let i = 0; i < n; i++) {
    const s = samples[i]!;
    if (s.track !== track.id) fail(`sample ${i} belongs to track ${s.track}, not ${track.id}`);
    if (!Number.isSafeInteger(s.dts) || s.dts < 0) fail(`track ${track.id} sample ${i} DTS ${s.dts} is not a non-negative integer`);
    if (!Number.isSafeInteger(s.pts) || s.pts < s.dts) fail(`track ${track.id} sample ${i} PTS ${s.pts} is not an integer >= DTS ${s.dts}`);
    if (s.dts < prevDts) fail(`track ${track.id} sample ${i} DTS ${s.dts} goes back from ${prevDts}`);
    prevDts = s.dts;
    const cto = toScale(s.pts, scale) - toScale(s.dts, scale);
    if (cto > 0x7fffffff) fail(`track ${track.id} sample ${i} composition offset ${cto} overflows 32 bits`);
    ctos[i] = cto;
    if (cto !== 0) withCto = true;
    dataSize += s.data.length;
    if (i > 0) durations[i - 1] = toScale(s.dts, scale) - toScale(samples[i - 1]!.dts, scale);
  }
  const last = samples[n - 1]!;
  if (part.nextDts !== undefined) {
    if (!Number.isSafeInteger(part.nextDts) || part.nextDts < last.dts) fail(`track ${track.id} nextDts ${part.nextDts} is before the last DTS ${last.dts}`);
    durations[n - 1] = toScale(part.nextDts, scale) - toScale(last.dts, scale);
  } else if (n > 1) {
    durations[n - 1] = durations[n - 2]!;
  } else if (track.codec === 'aac') {
    durations[0] = 1024; // one AAC frame, in samples
  } else if (track.codec === 'opus') {
    durations[0] = Math.round((opusSamples(last.data) * scale) / 48000);
  } else {
    fail(`track ${track.id}: the duration of a lone video sample needs nextDts`);
  }
  for (const d of durations) if (d > 0xffffffff) fail(`track ${track.id} sample duration ${d} overflows 32 bits`);
  const perSample = withCto ? 16 : 12;
  const trafSize = 8 + 16 /* tfhd */ + 20 /* tfdt v1 */ + 20 + n * perSample; /* trun */
  return { track, samples, base: toScale(samples[0]!.dts, scale), durations, ctos, withCto, dataSize, trafSize };
}

/**
 * moof (mfhd, a traf per part: tfhd default-base-is-moof, tfdt v1, trun v1 with durations, sizes,
 * sync flags and signed composition offsets) + mdat holding the parts' samples in order. Parts with
 * no samples are left out. No styp is written.
 */
export function mediaSegment(sequence: number, parts: readonly SegmentPart[]): Buffer {
  if (!Number.isInteger(sequence) || sequence < 0 || sequence > 0xffffffff) fail(`sequence number ${sequence} is out of range`);
  const plans = parts.filter((p) => p.samples.length > 0).map(plan);
  if (plans.length === 0) fail('a media segment needs at least one sample');
  const seen = new Set<number>();
  for (const p of plans) {
    if (seen.has(p.track.id)) fail(`track ${p.track.id} appears in two parts`);
    seen.add(p.track.id);
  }
  const moofSize = 8 + 16 + plans.reduce((n, p) => n + p.trafSize, 0);
  const dataSize = plans.reduce((n, p) => n + p.dataSize, 0);
  const mdatSize = 8 + dataSize;
  if (moofSize + mdatSize > 0x7fffffff) fail(`media segment of ${moofSize + mdatSize} bytes is too large`);
  const out = Buffer.allocUnsafe(moofSize + mdatSize);
  let o = 0;
  const head = (size: number, type: string) => {
    out.writeUInt32BE(size, o);
    out.write(type, o + 4, 'latin1');
    o += 8;
  };
  const full = (size: number, type: string, version: number, flags: number) => {
    head(size, type);
    out.writeUInt32BE(((version << 24) | flags) >>> 0, o);
    o += 4;
  };
  head(moofSize, 'moof');
  full(16, 'mfhd', 0, 0);
  o = out.writeUInt32BE(sequence, o);
  let dataOffset = moofSize + 8;
  for (const p of plans) {
    head(p.trafSize, 'traf');
    full(16, 'tfhd', 0, 0x020000);
    o = out.writeUInt32BE(p.track.id, o);
    full(20, 'tfdt', 1, 0);
    const hi = Math.floor(p.base / 2 ** 32);
    o = out.writeUInt32BE(hi, o);
    o = out.writeUInt32BE(p.base - hi * 2 ** 32, o);
    const n = p.samples.length;
    full(20 + n * (p.withCto ? 16 : 12), 'trun', 1, TRUN_FLAGS_BASE | (p.withCto ? TRUN_CTO : 0));
    o = out.writeUInt32BE(n, o);
    o = out.writeInt32BE(dataOffset, o);
    const video = p.track.kind === 'video';
    for (let i = 0; i < n; i++) {
      const s = p.samples[i]!;
      o = out.writeUInt32BE(p.durations[i]!, o);
      o = out.writeUInt32BE(s.data.length, o);
      o = out.writeUInt32BE(!video || s.keyframe ? SYNC : NON_SYNC, o);
      if (p.withCto) o = out.writeInt32BE(p.ctos[i]!, o);
    }
    dataOffset += p.dataSize;
  }
  head(mdatSize, 'mdat');
  for (const p of plans) {
    for (const s of p.samples) {
      out.set(s.data, o);
      o += s.data.length;
    }
  }
  return out;
}
