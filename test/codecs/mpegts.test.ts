import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { adtsHeader, buildAudioSpecificConfig, readAdts } from '../../codecs/aac.ts';
import { CodecError } from '../../codecs/errors.ts';
import { annexBToAvcc, buildAvcC, NalType, splitAnnexB } from '../../codecs/h264.ts';
import { TsMuxer } from '../../codecs/mpegts.ts';
import type { AudioTrack, Sample, VideoTrack } from '../../codecs/track.ts';
import { decodeErrors, ffmpeg, probeStreams, readPackets, tempDir } from './hls-codecs-helpers.ts';

const WRAP = 2 ** 33;

interface Fixture {
  video: VideoTrack;
  audio: AudioTrack;
  videoSamples: Sample[];
  audioSamples: Sample[];
}

function videoTrack(sps: Buffer[], pps: Buffer[], width: number, height: number): VideoTrack {
  return { kind: 'video', id: 1, codec: 'h264', config: buildAvcC(sps, pps), width, height, codecString: 'avc1.64001e' };
}

/** An access unit as the gateway carries it: AVCC without AUD/SPS/PPS (those live in the track config). */
function toSampleData(nals: Buffer[], sps: Buffer[], pps: Buffer[]): { data: Buffer; keyframe: boolean } {
  const kept: Buffer[] = [];
  let keyframe = false;
  for (const n of nals) {
    const type = n[0]! & 0x1f;
    if (type === NalType.SPS) sps.push(n);
    else if (type === NalType.PPS) pps.push(n);
    else if (type !== NalType.AUD) kept.push(n);
    if (type === NalType.IDR) keyframe = true;
  }
  const data = Buffer.concat(
    kept.flatMap((n) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(n.length);
      return [len, n];
    }),
  );
  return { data, keyframe };
}

async function audioFixture(dir: string): Promise<{ audio: AudioTrack; audioSamples: Sample[] }> {
  const file = join(dir, 'a.aac');
  await ffmpeg('-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-ac', '2', '-t', '2', '-c:a', 'aac', '-f', 'adts', file);
  const frames = [...readAdts(await readFile(file))];
  const config = frames[0]!.config;
  const audio: AudioTrack = { kind: 'audio', id: 2, codec: 'aac', config: buildAudioSpecificConfig(config), sampleRate: 48000, channels: 2, codecString: 'mp4a.40.2' };
  // 1024 samples at 48 kHz = 1920 ticks of 90 kHz
  const audioSamples = frames.map((f, i) => ({ track: 2, dts: i * 1920, pts: i * 1920, keyframe: true, data: f.payload }));
  return { audio, audioSamples };
}

/** Raw Annex B H.264 without B-frames, split into access units at its AUDs; PTS = DTS = frame * 3000. */
async function basicFixture(dir: string): Promise<Fixture> {
  const file = join(dir, 'v.h264');
  await ffmpeg(
    '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-t', '2',
    '-c:v', 'libx264', '-preset', 'veryfast', '-bf', '0', '-g', '30', '-pix_fmt', 'yuv420p', '-x264-params', 'aud=1', '-f', 'h264', file,
  ); // prettier-ignore
  const units: Buffer[][] = [];
  for (const nal of splitAnnexB(await readFile(file))) {
    if ((nal[0]! & 0x1f) === NalType.AUD || units.length === 0) units.push([]);
    units[units.length - 1]!.push(nal);
  }
  const sps: Buffer[] = [];
  const pps: Buffer[] = [];
  const videoSamples = units.map((u, i) => ({ track: 1, dts: i * 3000, pts: i * 3000, ...toSampleData(u, sps, pps) }));
  return { video: videoTrack(sps.slice(0, 1), pps.slice(0, 1), 640, 360), videoSamples, ...(await audioFixture(dir)) };
}

/** H.264 with B-frames: ffmpeg's own TS gives each access unit with its PTS and DTS. */
async function bframeFixture(dir: string): Promise<Fixture> {
  const src = join(dir, 'src.ts');
  await ffmpeg('-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30', '-t', '2', '-c:v', 'libx264', '-preset', 'veryfast', '-bf', '3', '-g', '30', '-pix_fmt', 'yuv420p', '-f', 'mpegts', src);
  const sps: Buffer[] = [];
  const pps: Buffer[] = [];
  const videoSamples = (await readPackets(src)).map((p) => ({ track: 1, dts: p.dts, pts: p.pts, ...toSampleData(splitAnnexB(p.data), sps, pps) }));
  return { video: videoTrack(sps.slice(0, 1), pps.slice(0, 1), 640, 360), videoSamples, ...(await audioFixture(dir)) };
}

function interleave(a: readonly Sample[], b: readonly Sample[]): Sample[] {
  return [...a, ...b].sort((x, y) => x.dts - y.dts || x.track - y.track);
}

function muxAll(f: Fixture, offset = 0): Buffer {
  const mux = new TsMuxer([f.video, f.audio]);
  const shift = (s: Sample): Sample => ({ ...s, dts: s.dts + offset, pts: s.pts + offset });
  return Buffer.concat(interleave(f.videoSamples, f.audioSamples).map((s) => mux.mux(shift(s))));
}

interface Walked {
  pes: { pid: number; pts: number; dts: number; pcr?: number; randomAccess: boolean; after: number[] }[];
  counts: Map<number, number>;
}

/** Reads our TS back: sync bytes, continuity counters, PES timestamps, PCR and the PIDs before each PES. */
function walk(t: import('ava').ExecutionContext, ts: Buffer): Walked {
  t.is(ts.length % 188, 0);
  const cc = new Map<number, number>();
  const counts = new Map<number, number>();
  const pes: Walked['pes'] = [];
  const recent: number[] = [];
  for (let o = 0; o < ts.length; o += 188) {
    t.is(ts[o], 0x47, `sync at ${o}`);
    const pid = ((ts[o + 1]! & 0x1f) << 8) | ts[o + 2]!;
    const pusi = (ts[o + 1]! & 0x40) !== 0;
    const afc = (ts[o + 3]! >>> 4) & 3;
    const c = ts[o + 3]! & 0xf;
    const prev = cc.get(pid);
    if (prev !== undefined && (prev + 1) % 16 !== c) t.fail(`PID ${pid} continuity ${prev} -> ${c} at ${o}`);
    cc.set(pid, c);
    counts.set(pid, (counts.get(pid) ?? 0) + 1);
    let p = o + 4;
    let pcr: number | undefined;
    let randomAccess = false;
    if (afc & 2) {
      const len = ts[p]!;
      if (len > 0) {
        const flags = ts[p + 1]!;
        randomAccess = (flags & 0x40) !== 0;
        if (flags & 0x10) pcr = ts.readUInt32BE(p + 2) * 2 + (ts[p + 6]! >>> 7);
      }
      p += 1 + len;
    }
    if (pusi && pid >= 0x100 && pid < 0x1000) {
      t.deepEqual([...ts.subarray(p, p + 3)], [0, 0, 1]);
      const flags = ts[p + 7]!;
      const read = (q: number) => ((ts[q]! >>> 1) & 7) * 2 ** 30 + (ts.readUInt16BE(q + 1) >>> 1) * 2 ** 15 + (ts.readUInt16BE(q + 3) >>> 1);
      const pts = read(p + 9);
      const dts = flags & 0x40 ? read(p + 14) : pts;
      const entry: Walked['pes'][number] = { pid, pts, dts, randomAccess, after: recent.slice(-2) };
      if (pcr !== undefined) entry.pcr = pcr;
      pes.push(entry);
    }
    recent.push(pid);
  }
  return { pes, counts };
}

async function checkWithFfprobe(t: import('ava').ExecutionContext, file: string, f: Fixture) {
  const streams = await probeStreams(file);
  t.like(streams.find((s) => s.codec_name === 'h264'), { width: 640, height: 360, nb_read_frames: String(f.videoSamples.length) });
  t.like(streams.find((s) => s.codec_name === 'aac'), { nb_read_frames: String(f.audioSamples.length) });
  t.is(streams.length, 2);
  t.is(await decodeErrors(file), '');
}

test('TS from raw Annex B H.264 (no B-frames) and ADTS AAC: ffprobe reads h264 640x360 + aac, exact frame counts, clean decode', async (t) => {
  const dir = await tempDir(t);
  const f = await basicFixture(dir);
  t.is(f.videoSamples.length, 60);
  const ts = muxAll(f);
  const file = join(dir, 'out.ts');
  await writeFile(file, ts);
  await checkWithFfprobe(t, file, f);

  const { pes, counts } = walk(t, ts);
  const keyframes = f.videoSamples.filter((s) => s.keyframe).length;
  t.is(keyframes, 2);
  t.is(counts.get(0), keyframes, 'one PAT per keyframe (the first sample is one)');
  t.is(counts.get(0x1000), keyframes);
  const video = pes.filter((p) => p.pid === 0x100);
  t.is(video.length, 60);
  for (const [i, p] of video.entries()) {
    t.is(p.pcr, p.dts, 'PCR from DTS on the video PID');
    t.is(p.randomAccess, f.videoSamples[i]!.keyframe);
    if (p.randomAccess) t.deepEqual(p.after, [0, 0x1000], 'PAT and PMT right before a keyframe');
  }
  t.true(pes.filter((p) => p.pid === 0x101).every((p) => p.pcr === undefined));
});

test('TS with B-frames: explicit PTS/DTS come back exactly from ffprobe', async (t) => {
  const dir = await tempDir(t);
  const f = await bframeFixture(dir);
  t.true(f.videoSamples.some((s) => s.pts !== s.dts), 'the fixture has reordered frames');
  const file = join(dir, 'out.ts');
  await writeFile(file, muxAll(f));
  await checkWithFfprobe(t, file, f);
  const back = (await readPackets(file)).filter((p) => p.stream === 0);
  t.deepEqual(
    back.map((p) => [p.pts, p.dts]),
    f.videoSamples.map((s) => [s.pts, s.dts]),
  );
  // what went out is the same access units, as Annex B with an AUD and parameter sets before each IDR
  for (const [i, p] of back.entries()) {
    const nals = splitAnnexB(p.data);
    t.is(nals[0]![0]! & 0x1f, NalType.AUD);
    if (f.videoSamples[i]!.keyframe) t.deepEqual(nals.slice(1, 3).map((n) => n[0]! & 0x1f), [NalType.SPS, NalType.PPS]);
    const inBand = new Set<number>([NalType.AUD, NalType.SPS, NalType.PPS]);
    const rest = nals.filter((n) => !inBand.has(n[0]! & 0x1f));
    t.deepEqual(annexBToAvcc(Buffer.concat(rest.flatMap((n) => [Buffer.from([0, 0, 1]), n]))), f.videoSamples[i]!.data);
  }
});

test('TS timestamps wrap at 33 bits: PES fields, PCR, and a file that crosses the wrap decodes cleanly', async (t) => {
  const f = await basicFixture(await tempDir(t));
  const mux = new TsMuxer([f.video, f.audio]);
  const first = f.videoSamples[0]!;
  const out = mux.mux({ ...first, dts: WRAP - 3000, pts: WRAP + 6000 });
  const { pes } = walk(t, out);
  t.deepEqual(pes[0], { pid: 0x100, pts: 6000, dts: WRAP - 3000, pcr: WRAP - 3000, randomAccess: true, after: [0, 0x1000] });
  const a = walk(t, mux.mux({ ...f.audioSamples[0]!, dts: 3 * WRAP + 7, pts: 3 * WRAP + 7 })).pes[0]!;
  t.is(a.pts, 7);

  const dir = await tempDir(t);
  const file = join(dir, 'wrap.ts');
  const ts = muxAll(f, WRAP - 45_000); // half a second before the wrap
  const video = walk(t, ts).pes.filter((p) => p.pid === 0x100);
  t.true(video.some((p) => p.pts < 45_000) && video.some((p) => p.pts > WRAP - 45_000));
  await writeFile(file, ts);
  await checkWithFfprobe(t, file, f);
});

test('TsMuxer rejects what it cannot carry', (t) => {
  const sps = Buffer.from('6764001eacd940a02ff970110000030001000003003c0f162d96', 'hex'); // x264, 640x360 high
  const video = videoTrack([sps], [Buffer.from([0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0])], 640, 360);
  const aac: AudioTrack = { kind: 'audio', id: 2, codec: 'aac', config: Buffer.from([0x12, 0x10]), sampleRate: 44100, channels: 2, codecString: 'mp4a.40.2' };
  const mpegts = { instanceOf: CodecError, message: /^mpegts: / };
  t.throws(() => new TsMuxer([{ ...video, codec: 'hevc' }]), { ...mpegts, message: /hevc is not supported/ });
  t.throws(() => new TsMuxer([{ ...aac, codec: 'opus' }]), { ...mpegts, message: /opus is not supported/ });
  t.throws(() => new TsMuxer([]), mpegts);
  t.throws(() => new TsMuxer([video, { ...video, id: 3 }]), mpegts);
  t.throws(() => new TsMuxer([video, { ...aac, id: 1 }]), mpegts);
  t.throws(() => new TsMuxer([{ ...aac, config: Buffer.from([0x12]) }]), { instanceOf: CodecError });
  const mux = new TsMuxer([video, aac]);
  const ok = { track: 1, dts: 0, pts: 0, keyframe: true, data: Buffer.from([0, 0, 0, 2, 0x65, 0x88]) };
  t.is(mux.mux(ok).length % 188, 0);
  t.throws(() => mux.mux({ ...ok, track: 9 }), { ...mpegts, message: /unknown track 9/ });
  t.throws(() => mux.mux({ ...ok, data: Buffer.from([0, 0, 0, 9, 0x65]) }), { ...mpegts, message: /NAL length 9 at offset 0 exceeds the 1 bytes left/ });
  t.throws(() => mux.mux({ ...ok, data: Buffer.from([0, 0, 0]) }), { ...mpegts, message: /truncated/ });
  t.throws(() => mux.mux({ ...ok, pts: -1 }), { ...mpegts, message: />= DTS/ });
  t.throws(() => mux.mux({ ...ok, dts: -5, pts: 0 }), { ...mpegts, message: /non-negative/ });
  t.throws(() => mux.mux({ ...ok, track: 2, data: Buffer.alloc(9000) }), { ...mpegts, message: /ADTS/ });
  t.is(adtsHeader({ objectType: 2, samplingIndex: 4, sampleRate: 44100, channels: 2 }, 0).length, 7);
});

test('TsMuxer output size: whole packets, every size of PES from 1 byte up across packet boundaries', (t) => {
  const aac: AudioTrack = { kind: 'audio', id: 2, codec: 'aac', config: Buffer.from([0x12, 0x10]), sampleRate: 44100, channels: 2, codecString: 'mp4a.40.2' };
  const mux = new TsMuxer([aac]);
  let total = Buffer.alloc(0);
  for (let n = 1; n < 700; n++) {
    const out = mux.mux({ track: 2, dts: n * 2090, pts: n * 2090, keyframe: true, data: Buffer.alloc(n, n & 0xff) });
    total = Buffer.concat([total, out]);
    const audio = walk(t, out);
    t.is(audio.pes.length, 1);
    // PAT + PMT + ceil((14 + 7 + n + 8 PCR) / 184) packets, payload recovered exactly
    const payload: Buffer[] = [];
    for (let o = 376; o < out.length; o += 188) {
      const afc = (out[o + 3]! >>> 4) & 3;
      payload.push(out.subarray(afc & 2 ? o + 5 + out[o + 4]! : o + 4, o + 188));
    }
    const pes = Buffer.concat(payload);
    t.is(pes.readUInt16BE(4), pes.length - 6, `PES length for ${n}`);
    t.deepEqual(pes.subarray(14 + 7), Buffer.alloc(n, n & 0xff));
  }
  walk(t, total); // continuity across calls
});

