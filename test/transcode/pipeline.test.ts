/**
 * The transcode pipeline on the CPU backend, without threads or sockets: H.264 from ffmpeg in,
 * renditions out, checked frame by frame and by ffprobe; the frame pool's accounting; and the
 * measurement of one 720p -> 480p transcode.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Track } from '../../codecs/track.ts';
import { TranscodeError } from '../../codecs/transcode/errors.ts';
import { FramePool, FramePoolExhaustedError } from '../../codecs/transcode/frame-pool.ts';
import { renditionSize } from '../../codecs/transcode/ladder.ts';
import { loadNodeAv } from '../../codecs/transcode/native.ts';
import { TranscodePipeline, type OutputFrame, type PipelineOptions, type PipelineOutput } from '../../codecs/transcode/pipeline.ts';
import { encodeFlv } from '../helpers/ffmpeg.ts';
import { flvMedia, probeFrames, decodeErrors, writeFlv, type SourceMedia } from './media.ts';

const dir = mkdtempSync(join(tmpdir(), 'trib-pipeline-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

let hd: SourceMedia;
let small: SourceMedia;
let medium: SourceMedia;

test.before(async () => {
  await Promise.all([
    encodeFlv(join(dir, 'hd.flv'), { seconds: 10, width: 1280, height: 720, fps: 30, gop: 30 }),
    encodeFlv(join(dir, 'small.flv'), { seconds: 2, width: 320, height: 180, fps: 30, gop: 30 }),
    encodeFlv(join(dir, 'medium.flv'), { seconds: 2, width: 640, height: 360, fps: 30, gop: 30 }),
  ]);
  hd = flvMedia(join(dir, 'hd.flv'));
  small = flvMedia(join(dir, 'small.flv'));
  medium = flvMedia(join(dir, 'medium.flv'));
});

const BASE: Omit<PipelineOptions, 'renditions'> = { backend: 'cpu', poolSize: 4, audioBitrate: 128_000, preset: 'veryfast', threads: 1, gopSeconds: 2 };

interface Collected {
  tracks: Map<number, Track[]>;
  frames: Map<number, OutputFrame[]>;
}

function collector(): { sink: (o: PipelineOutput) => void; got: Collected } {
  const got: Collected = { tracks: new Map(), frames: new Map() };
  const sink = (o: PipelineOutput): void => {
    for (const r of o.renditions) {
      if (o.type === 'track') got.tracks.set(r, [...(got.tracks.get(r) ?? []), o.track]);
      else got.frames.set(r, [...(got.frames.get(r) ?? []), { ...o.frame, data: Buffer.from(o.frame.data) }]);
    }
  };
  return { sink, got };
}

function feed(p: TranscodePipeline, m: SourceMedia, shift = 0): void {
  if (m.video) p.track(m.video);
  if (m.audio) p.track(m.audio);
  for (const f of m.frames) p.frame({ ...f, dts: f.dts + shift, pts: f.pts + shift });
}

test('a 720p source through 360p, 240p and a copy: every frame decoded, encoded and timed as the source, keyframes aligned, ffprobe decodes each at its size', async (t) => {
  const { sink, got } = collector();
  const p = await TranscodePipeline.open(
    { ...BASE, renditions: [{ name: '360p', height: 360, bitrate: 600_000 }, { name: '240p', height: 240, bitrate: 300_000 }, { name: 'src', bitrate: 0 }] },
    sink,
  );
  t.teardown(() => p.close());
  feed(p, hd);
  p.flush();
  const stats = p.stats;
  const video = hd.frames.filter((f) => f.kind === 'video');
  const audio = hd.frames.filter((f) => f.kind === 'audio');
  t.is(stats.videoIn, video.length);
  t.is(stats.decoded, video.length, 'every source frame decoded');
  t.is(stats.pool.inUse, 0, 'every frame back in the pool');
  t.true(stats.pool.peakInUse >= 1 && stats.pool.peakInUse <= stats.pool.size, `peak ${stats.pool.peakInUse} of ${stats.pool.size}`);

  const sourcePts = video.map((f) => f.pts).sort((a, b) => a - b);
  const sourceKeys = video.filter((f) => f.keyframe).map((f) => f.pts);
  const keysOf = (r: number): number[] => got.frames.get(r)!.filter((f) => f.kind === 'video' && f.keyframe).map((f) => f.pts);
  for (const [r, height, width] of [[0, 360, 640], [1, 240, 426]] as const) {
    const frames = got.frames.get(r)!;
    const v = frames.filter((f) => f.kind === 'video');
    const a = frames.filter((f) => f.kind === 'audio');
    t.is(v.length, video.length, `rendition ${r}: every frame encoded`);
    t.deepEqual(v.map((f) => f.pts), sourcePts, `rendition ${r}: the source's timestamps, in order`);
    t.true(v.every((f) => f.dts === f.pts), 'no B-frames: DTS = PTS');
    t.deepEqual(keysOf(r), sourceKeys, `rendition ${r}: keyframes where the source has them`);
    t.is(a.length, audio.length, `rendition ${r}: AAC passed through`);
    t.true(Math.abs(v[0]!.pts - a[0]!.pts) <= 3600, `rendition ${r}: audio and video start within 40 ms (${v[0]!.pts} / ${a[0]!.pts})`);
    const tracks = got.tracks.get(r)!;
    t.like(tracks.find((x) => x.kind === 'video'), { width, height, codec: 'h264' });
    const file = join(dir, `r${r}.flv`);
    writeFlv(file, tracks, frames);
    const probed = await probeFrames(file);
    t.like(probed.find((s) => s.codec === 'h264'), { width, height, frames: video.length });
    t.like(probed.find((s) => s.codec === 'aac'), { frames: audio.length });
    t.is(await decodeErrors(file), '');
  }
  const copy = got.frames.get(2)!.filter((f) => f.kind === 'video');
  t.is(copy.length, video.length);
  t.deepEqual(got.tracks.get(2)!.find((x) => x.kind === 'video')?.config, hd.video!.config, 'the copy carries the source config');
  t.deepEqual(stats.renditions.map((r) => [r.name, r.width, r.height]), [['360p', 640, 360], ['240p', 426, 240], ['src', 1280, 720]]);
});

test.serial('one 720p -> 480p transcode: every source frame comes out', async (t) => {
  let out = 0;
  const p = await TranscodePipeline.open({ ...BASE, renditions: [{ name: '480p', height: 480, bitrate: 1_000_000 }] }, (o) => {
    if (o.type === 'frame' && o.frame.kind === 'video') out++;
  });
  t.teardown(() => p.close());
  const video = hd.frames.filter((f) => f.kind === 'video');
  if (hd.video) p.track(hd.video);
  for (const f of video) p.frame(f);
  p.flush();
  t.is(out, video.length);
});

test('the source changes size mid-stream (as browsers do): the decoder follows, the copy gets the new config, the renditions keep their timeline', async (t) => {
  const { sink, got } = collector();
  const p = await TranscodePipeline.open({ ...BASE, renditions: [{ name: '240p', height: 240, bitrate: 300_000 }, { name: 'src', bitrate: 0 }] }, sink);
  t.teardown(() => p.close());
  feed(p, small);
  const end = Math.max(...small.frames.map((f) => f.dts)) + 3000;
  feed(p, medium, end);
  p.flush();
  const v = got.frames.get(0)!.filter((f) => f.kind === 'video');
  const inVideo = small.frames.filter((f) => f.kind === 'video').length + medium.frames.filter((f) => f.kind === 'video').length;
  t.is(v.length, inVideo);
  for (let i = 1; i < v.length; i++) t.true(v[i]!.dts > v[i - 1]!.dts);
  // 180 lines is below 240: never upscaled, so the rendition changes size with the source.
  t.deepEqual(got.tracks.get(0)!.filter((x) => x.kind === 'video').map((x) => (x.kind === 'video' ? `${x.width}x${x.height}` : '')), ['320x180', '426x240']);
  t.deepEqual(got.tracks.get(1)!.filter((x) => x.kind === 'video').map((x) => (x.kind === 'video' ? `${x.width}x${x.height}` : '')), ['320x180', '640x360']);
  t.is(p.stats.pool.inUse, 0);
});

test('the frame pool has a fixed size: acquire past it is refused, every slot comes back, a GPU pool without CUDA fails clearly', async (t) => {
  const av = await loadNodeAv();
  const pool = FramePool.open(av, { backend: 'cpu', size: 2 });
  t.teardown(() => pool.close());
  const a = pool.acquire();
  const b = pool.acquire();
  t.is(pool.inUse, 2);
  t.throws(() => pool.acquire(), { instanceOf: FramePoolExhaustedError, message: /all 2 frames of the pool are in use/ });
  a.release();
  t.throws(() => a.release(), { message: /not held/ });
  const c = pool.acquire();
  c.release();
  b.release();
  t.is(pool.inUse, 0);
  t.is(pool.stats.peakInUse, 2);
  t.throws(() => FramePool.open(av, { backend: 'cpu', size: 1 }), { instanceOf: TranscodeError });
  // No CUDA here: the GPU backend says so rather than falling back silently.
  const gpu = t.throws(() => FramePool.open(av, { backend: 'gpu', size: 4 }), { instanceOf: TranscodeError });
  t.regex(gpu!.message, /^device: no CUDA device/);
});

test('rendition sizes keep the aspect ratio, are even, and never exceed the source', (t) => {
  t.deepEqual(renditionSize({ width: 1280, height: 720 }, 480), { width: 854, height: 480 });
  t.deepEqual(renditionSize({ width: 1280, height: 720 }, 240), { width: 426, height: 240 });
  t.deepEqual(renditionSize({ width: 640, height: 360 }, 720), { width: 640, height: 360 });
  t.deepEqual(renditionSize({ width: 720, height: 1280 }, 480), { width: 270, height: 480 });
  t.deepEqual(renditionSize({ width: 321, height: 181 }, 720), { width: 320, height: 180 });
});
