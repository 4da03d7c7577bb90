import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { FlvTagType, readFlvFile } from '../../codecs/flv.ts';
import { parseMediaPlaylist } from '../../codecs/m3u8.ts';
import { HlsPackager } from '../../gateway/hls/packager.ts';
import { RtmpIngest } from '../../gateway/rtmp/ingest.ts';
import { allowAll } from '../../sessions/auth.ts';
import { BufferPool } from '../../sessions/pool.ts';
import { Registry } from '../../sessions/registry.ts';
import { encodeFlv } from '../helpers/ffmpeg.ts';
import { run } from '../helpers/process.ts';

const HOUR = 3_600_000;

for (const format of ['ts', 'fmp4'] as const) {
  test(`${format}: publisher timestamps that jump back and forward by an hour give monotonic segments with DISCONTINUITY`, async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'trib-jump-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const flv = join(dir, 'src.flv');
    await encodeFlv(flv, { seconds: 6, width: 160, height: 120, fps: 30, gop: 30 });

    const pool = new BufferPool({ maxBytes: 64 << 20 });
    const registry = new Registry({ maxStreams: 1, onConflict: 'takeover', authorizer: allowAll, limits: { gopCacheBytes: 8 << 20, output: { maxBytes: 8 << 20, maxFrames: 1000 } } });
    const packager = new HlsPackager('live/jump', { format, targetDurationMs: 1000, windowSegments: 20, graceMs: 60_000 }, pool, pino({ level: 'silent' }), () => {});
    const stream = await registry.publish({ app: 'live', name: 'jump', protocol: 'test', remoteAddress: 'here' }, { protocol: 'test', remoteAddress: 'here', close: () => {} });
    packager.attach(stream);
    const ingest = new RtmpIngest(stream, pool);
    // 0-2 s at +1 h, 2-4 s back at the true time (an hour back), 4-6 s an hour ahead again.
    const shift = (ms: number): number => (ms < 2000 ? ms + HOUR : ms < 4000 ? ms : ms + HOUR);
    let videoFrames = 0;
    for (const tag of readFlvFile(readFileSync(flv))) {
      if (tag.type === FlvTagType.Video) {
        ingest.video(tag.body, shift(tag.timestamp));
        if (tag.body[1] === 1) videoFrames++;
      } else if (tag.type === FlvTagType.Audio) ingest.audio(tag.body, shift(tag.timestamp));
    }
    stream.end('unpublished');

    const pl = parseMediaPlaylist(packager.playlist!);
    t.true(pl.endList);
    t.is(pl.segments.filter((s) => s.discontinuity).length, 2);
    const total = pl.segments.reduce((a, s) => a + s.duration, 0);
    t.true(Math.abs(total - 6) < 0.5, `duration ${total}`);

    const init = format === 'fmp4' ? packager.init((pl.segments[0]!.map ?? pl.map)!.uri)! : Buffer.alloc(0);
    const whole = join(dir, `all.${format === 'ts' ? 'ts' : 'mp4'}`);
    writeFileSync(whole, Buffer.concat([init, ...pl.segments.map((s) => packager.segment(s.uri)!.bytes)]));
    const r = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=dts', '-of', 'csv=p=0', whole], { timeoutMs: 30_000 });
    const dts = r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => Number(l.split(',')[0]));
    t.is(dts.length, videoFrames);
    t.true(dts.every((d, i) => i === 0 || d > dts[i - 1]!), 'video DTS strictly increasing across the jumps');
    t.true(dts[dts.length - 1]! - dts[0]! < 7 * 90_000, 'jumps rebased, not carried');

    packager.close();
    t.is(pool.bytesInUse, 0);
  });
}

test('when segments cannot be stored (pool full) the output drops them and says so; the publisher never sees the error', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-full-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const flv = join(dir, 'src.flv');
  await encodeFlv(flv, { seconds: 3, width: 160, height: 120, fps: 30, gop: 30 });
  const frames = new BufferPool({ maxBytes: 64 << 20 });
  // The packager's own pool is too small for any segment.
  const segments = new BufferPool({ maxBytes: 1024 });
  const registry = new Registry({ maxStreams: 1, onConflict: 'takeover', authorizer: allowAll, limits: { gopCacheBytes: 8 << 20, output: { maxBytes: 8 << 20, maxFrames: 1000 } } });
  const errors: string[] = [];
  const packager = new HlsPackager('live/full', { format: 'ts', targetDurationMs: 500, windowSegments: 6, graceMs: 60_000, onError: (r) => errors.push(r) }, segments, pino({ level: 'silent' }), () => {});
  const stream = await registry.publish({ app: 'live', name: 'full', protocol: 'test', remoteAddress: 'here' }, { protocol: 'test', remoteAddress: 'here', close: () => {} });
  packager.attach(stream);
  const ingest = new RtmpIngest(stream, frames);
  let sent = 0;
  let keyframes = 0;
  for (const tag of readFlvFile(readFileSync(flv))) {
    if (tag.type === FlvTagType.Video) {
      ingest.video(tag.body, tag.timestamp);
      if (tag.body[1] === 1) sent++;
      if (tag.body[1] === 1 && tag.body[0]! >> 4 === 1) keyframes++;
    } else if (tag.type === FlvTagType.Audio) ingest.audio(tag.body, tag.timestamp);
  }
  t.is(stream.trackStats.get(1)?.frames, sent, 'every frame reached the stream');
  // Every cut (at each keyframe after the first) lost its segment, and each cut still opened the next.
  t.is(keyframes, 3);
  t.deepEqual(errors, ['pool_exhausted', 'pool_exhausted']);
  t.is(packager.playlist, undefined);
  stream.end('unpublished');
  t.deepEqual(errors, ['pool_exhausted', 'pool_exhausted', 'pool_exhausted'], 'the last segment, at the end, too');
  packager.close();
  t.is(frames.bytesInUse, 0);
  t.is(segments.bytesInUse, 0);
});
