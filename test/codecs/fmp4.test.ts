import test, { type ExecutionContext } from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CodecError } from '../../codecs/errors.ts';
import { initSegment, mediaSegment } from '../../codecs/fmp4.ts';
import type { AudioTrack, Sample, Track, VideoTrack } from '../../codecs/track.ts';
import { decodeErrors, ffmpeg, probeStreams, readPackets, readStreams, tempDir } from './hls-codecs-helpers.ts';

interface Source {
  tracks: Track[];
  samples: Sample[][]; // per track, decode order, 90 kHz, rebased to start at 0
}

/** Reads a file ffmpeg made: each stream's config from its extradata, each packet as a 90 kHz sample. */
async function source(file: string, describe: (codec: string, i: number, s: { width?: number; height?: number }) => Track): Promise<Source> {
  const streams = await readStreams(file);
  const packets = await readPackets(file);
  const tracks = streams.map((s, i) => ({ ...describe(s.codec, i, s), config: s.extradata }) as Track);
  const toClock = (v: number, tb: [number, number]) => {
    const x = (v * tb[0] * 90000) / tb[1];
    if (!Number.isInteger(x)) throw new Error(`timestamp ${v} in ${tb.join('/')} is not a whole 90 kHz tick`);
    return x;
  };
  const raw = packets.map((p) => {
    const tb = streams[p.stream]!.timeBase;
    return { stream: p.stream, dts: toClock(p.dts, tb), pts: toClock(p.pts, tb), keyframe: p.keyframe, data: p.data };
  });
  const base = Math.min(...raw.map((p) => p.dts));
  const samples = tracks.map(() => [] as Sample[]);
  for (const p of raw) samples[p.stream]!.push({ track: tracks[p.stream]!.id, dts: p.dts - base, pts: p.pts - base, keyframe: p.keyframe, data: p.data });
  return { tracks, samples };
}

/** Segments cut at the first track's keyframes (or every `every` samples); other tracks follow by DTS. */
function segments(src: Source, every?: number): Buffer[] {
  const lead = src.samples[0]!;
  const cuts = lead.map((s, i) => i).filter((i) => (every ? i % every === 0 : lead[i]!.keyframe));
  const out: Buffer[] = [];
  const cursor = src.samples.map(() => 0);
  cuts.forEach((cut, n) => {
    const end = cuts[n + 1];
    const endDts = end === undefined ? Infinity : lead[end]!.dts;
    const parts = src.tracks.map((track, ti) => {
      const all = src.samples[ti]!;
      const from = cursor[ti]!;
      let to = from;
      while (to < all.length && (ti === 0 ? to < (end ?? all.length) : all[to]!.dts < endDts)) to++;
      cursor[ti] = to;
      const part: { track: Track; samples: Sample[]; nextDts?: number } = { track, samples: all.slice(from, to) };
      if (to < all.length) part.nextDts = all[to]!.dts;
      return part;
    });
    out.push(mediaSegment(n + 1, parts));
  });
  return out;
}

async function check(t: ExecutionContext, dir: string, src: Source, want: Record<string, { width?: number; height?: number }>, every?: number) {
  const file = join(dir, 'out.mp4');
  await writeFile(file, Buffer.concat([initSegment(src.tracks), ...segments(src, every)]));
  const streams = await probeStreams(file);
  t.is(streams.length, src.tracks.length);
  src.tracks.forEach((track, i) => {
    const codec = track.codec === 'h264' ? 'h264' : track.codec;
    t.like(streams[i], { codec_name: codec, ...want[codec], nb_read_frames: String(src.samples[i]!.length) });
  });
  t.is(await decodeErrors(file), '');
  return file;
}

const video = (codec: 'h264' | 'hevc', s: { width?: number; height?: number }): VideoTrack => ({
  kind: 'video',
  id: 1,
  codec,
  config: Buffer.alloc(0),
  width: s.width!,
  height: s.height!,
  codecString: '',
});
const audio = (codec: 'aac' | 'opus', id: number, sampleRate: number): AudioTrack => ({ kind: 'audio', id, codec, config: Buffer.alloc(0), sampleRate, channels: 2, codecString: '' });

test('fMP4 init + fragments of H.264 (B-frames) and AAC: ffprobe reads them with exact frame counts and timestamps, clean decode', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.mp4');
  await ffmpeg(
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '2',
    '-c:v', 'libx264', '-preset', 'veryfast', '-bf', '3', '-g', '30', '-pix_fmt', 'yuv420p', '-video_track_timescale', '90000',
    '-c:a', 'aac', '-ac', '2', src,
  ); // prettier-ignore
  const s = await source(src, (codec, i, st) => (i === 0 ? video('h264', st) : audio('aac', 2, 48000)));
  t.is(s.samples[0]!.length, 60);
  t.true(s.samples[0]!.some((x) => x.pts !== x.dts), 'the fixture has reordered frames');
  const file = await check(t, dir, s, { h264: { width: 640, height: 360 } });
  const back = await readPackets(file);
  t.deepEqual(
    back.filter((p) => p.stream === 0).map((p) => [p.pts, p.dts, p.keyframe]),
    s.samples[0]!.map((x) => [x.pts, x.dts, x.keyframe]),
  );
  t.deepEqual(
    back.filter((p) => p.stream === 1).map((p) => p.dts),
    s.samples[1]!.map((x) => (x.dts * 48000) / 90000),
  );
});

test('fMP4 with HEVC (hvc1) in short parts (LL-HLS style, 5 frames each) decodes cleanly', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.mp4');
  await ffmpeg(
    '-f', 'lavfi', '-i', 'testsrc2=size=320x240:rate=30', '-t', '1', '-c:v', 'libx265', '-preset', 'ultrafast', '-x265-params', 'log-level=error:keyint=30',
    '-tag:v', 'hvc1', '-pix_fmt', 'yuv420p', '-video_track_timescale', '90000', src,
  ); // prettier-ignore
  const s = await source(src, (_c, _i, st) => video('hevc', st));
  await check(t, dir, s, { hevc: { width: 320, height: 240 } }, 5);
});

test('fMP4 with Opus (dOps from the OpusHead) decodes cleanly', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src.ogg');
  await ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '1', '-ac', '2', '-c:a', 'libopus', src);
  const s = await source(src, () => audio('opus', 1, 48000));
  t.is(s.tracks[0]!.config.toString('latin1', 0, 8), 'OpusHead');
  await check(t, dir, s, {}, 10);
});

/** Minimal box walker for the assertions below. */
function boxes(b: Buffer, start = 0, end = b.length): { type: string; start: number; end: number }[] {
  const out: { type: string; start: number; end: number }[] = [];
  for (let o = start; o < end; ) {
    const size = b.readUInt32BE(o);
    out.push({ type: b.toString('latin1', o + 4, o + 8), start: o, end: o + size });
    o += size;
  }
  return out;
}

function find(b: Buffer, path: string[]): { start: number; end: number } {
  let range = { start: 0, end: b.length };
  for (const [i, type] of path.entries()) {
    const inner = i === 0 ? range.start : range.start + 8;
    const hit = boxes(b, inner, range.end).find((x) => x.type === type);
    if (!hit) throw new Error(`no ${path.slice(0, i + 1).join('/')}`);
    range = hit;
  }
  return range;
}

test('mediaSegment converts 90 kHz DTS to the audio timescale without drift, and writes the fields it should', (t) => {
  const track = audio('aac', 3, 44100);
  // 1024 samples at 44.1 kHz are 2089.795... ticks; the gateway rounds DTS to whole ticks
  const at = (i: number) => Math.round(((441000 + i * 1024) * 90000) / 44100);
  const mk = (from: number, to: number): Sample[] => Array.from({ length: to - from }, (_, k) => ({ track: 3, dts: at(from + k), pts: at(from + k), keyframe: true, data: Buffer.alloc(10 + k) }));
  const a = mediaSegment(7, [{ track, samples: mk(0, 43), nextDts: at(43) }]);
  const b = mediaSegment(8, [{ track, samples: mk(43, 90) }]);
  const read = (seg: Buffer) => {
    const tfdt = find(seg, ['moof', 'traf', 'tfdt']);
    const trun = find(seg, ['moof', 'traf', 'trun']);
    const n = seg.readUInt32BE(trun.start + 12);
    const durations = Array.from({ length: n }, (_, i) => seg.readUInt32BE(trun.start + 20 + i * 12));
    return {
      seq: seg.readUInt32BE(find(seg, ['moof', 'mfhd']).start + 12),
      tfhdFlags: seg.readUInt32BE(find(seg, ['moof', 'traf', 'tfhd']).start + 8),
      base: Number(seg.readBigUInt64BE(tfdt.start + 12)),
      trunVersionFlags: seg.readUInt32BE(trun.start + 8),
      dataOffset: seg.readInt32BE(trun.start + 16),
      durations,
    };
  };
  const ra = read(a);
  const rb = read(b);
  t.is(ra.seq, 7);
  t.is(ra.tfhdFlags, 0x020000);
  t.is(ra.base, 441000);
  t.true(ra.durations.every((d) => d === 1024));
  t.is(rb.base, ra.base + ra.durations.reduce((x, y) => x + y, 0));
  t.true(rb.durations.every((d) => d === 1024));
  t.is(ra.trunVersionFlags, 0x01000701, 'v1; data offset, duration, size, flags; no composition offsets for audio');
  t.is(ra.dataOffset, find(a, ['mdat']).start + 8);
  t.is(a.length, find(a, ['mdat']).end);
});

test('mediaSegment: composition offsets and sync flags for video; lone samples; bad input rejected', (t) => {
  const v: VideoTrack = { ...video('h264', { width: 2, height: 2 }), id: 1 };
  const s = (dts: number, pts: number, keyframe = false): Sample => ({ track: 1, dts, pts, keyframe, data: Buffer.from([0, 0, 0, 1, 0x41]) });
  const seg = mediaSegment(1, [{ track: v, samples: [s(0, 3000, true), s(3000, 9000), s(6000, 6000)] }]);
  const trun = find(seg, ['moof', 'traf', 'trun']);
  t.is(seg.readUInt32BE(trun.start + 8), 0x01000f01);
  const row = (i: number) => [0, 1, 2, 3].map((k) => seg.readUInt32BE(trun.start + 20 + i * 16 + k * 4));
  t.deepEqual(row(0), [3000, 5, 0x02000000, 3000]);
  t.deepEqual(row(1), [3000, 5, 0x01010000, 6000]);
  t.deepEqual(row(2), [3000, 5, 0x01010000, 0]);

  const fmp4 = { instanceOf: CodecError, message: /^fmp4: / };
  t.throws(() => mediaSegment(1, [{ track: v, samples: [s(0, 0, true)] }]), { ...fmp4, message: /needs nextDts/ });
  const lone = mediaSegment(1, [{ track: v, samples: [s(0, 0, true)], nextDts: 1500 }]);
  t.is(lone.readUInt32BE(find(lone, ['moof', 'traf', 'trun']).start + 20), 1500);
  const opus = audio('opus', 2, 48000);
  const op = mediaSegment(1, [{ track: opus, samples: [{ track: 2, dts: 0, pts: 0, keyframe: true, data: Buffer.from([0xfc, 1, 2]) }] }]);
  t.is(op.readUInt32BE(find(op, ['moof', 'traf', 'trun']).start + 20), 960, 'Opus TOC: one 20 ms CELT frame');
  t.throws(() => mediaSegment(1, [{ track: v, samples: [s(3000, 3000), s(0, 0)] }]), { ...fmp4, message: /goes back/ });
  t.throws(() => mediaSegment(1, [{ track: v, samples: [s(0, -1)] }]), { ...fmp4, message: />= DTS/ });
  t.throws(() => mediaSegment(1, [{ track: v, samples: [{ ...s(0, 0), track: 5 }], nextDts: 10 }]), { ...fmp4, message: /belongs to track 5/ });
  t.throws(() => mediaSegment(1, [{ track: v, samples: [] }]), { ...fmp4, message: /at least one sample/ });
  t.throws(() => mediaSegment(-1, [{ track: v, samples: [s(0, 0)], nextDts: 1 }]), fmp4);
});

test('initSegment: ftyp brands, trak per track with its timescale, trex; bad configs rejected', (t) => {
  const avcC = Buffer.from('0164001effe1001a6764001eacd940a02ff970110000030001000003003c0f162d96010006 68ebe3cb22c0 fdf8f800'.replaceAll(' ', ''), 'hex');
  const v: VideoTrack = { ...video('h264', { width: 640, height: 360 }), config: avcC };
  const a: AudioTrack = { ...audio('aac', 2, 44100), config: Buffer.from([0x12, 0x10]) };
  const init = initSegment([v, a]);
  const ftyp = find(init, ['ftyp']);
  t.is(init.toString('latin1', ftyp.start + 8, ftyp.end), 'iso6\0\0\0\0iso6cmfcisom');
  const traks = boxes(init, find(init, ['moov']).start + 8, find(init, ['moov']).end).filter((x) => x.type === 'trak');
  t.is(traks.length, 2);
  const timescales = traks.map((tr) => {
    const mdia = boxes(init, tr.start + 8, tr.end).find((x) => x.type === 'mdia')!;
    const mdhd = boxes(init, mdia.start + 8, mdia.end).find((x) => x.type === 'mdhd')!;
    return init.readUInt32BE(mdhd.start + 20);
  });
  t.deepEqual(timescales, [90000, 44100]);
  t.is(boxes(init, find(init, ['moov', 'mvex']).start + 8, find(init, ['moov', 'mvex']).end).length, 2);

  const fmp4 = { instanceOf: CodecError, message: /^fmp4: / };
  t.throws(() => initSegment([]), fmp4);
  t.throws(() => initSegment([v, { ...a, id: 1 }]), { ...fmp4, message: /appears twice/ });
  t.throws(() => initSegment([{ ...v, id: 0 }]), fmp4);
  t.throws(() => initSegment([{ ...v, config: avcC.subarray(0, 12) }]), { instanceOf: CodecError, message: /^h264: / });
  t.throws(() => initSegment([{ ...audio('opus', 1, 48000), config: Buffer.from('OpusHead') }]), { ...fmp4, message: /not an OpusHead/ });
  t.throws(() => initSegment([{ ...v, codec: 'hevc', config: Buffer.alloc(5) }]), { ...fmp4, message: /hvcC/ });
  t.throws(() => initSegment([{ ...a, sampleRate: 0 }]), { ...fmp4, message: /sample rate/ });
});
