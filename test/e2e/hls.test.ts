import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { request } from 'node:http';
import { join } from 'node:path';
import { parseMediaPlaylist } from '../../codecs/m3u8.ts';
import { countPackets, encodeFlv, publish, publishFile } from '../helpers/ffmpeg.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { run } from '../helpers/process.ts';
import { waitFor } from '../helpers/wait.ts';
import { playWithHlsJs } from '../helpers/hls-player.ts';

const HLS_CONFIG = {
  hls: { format: 'ts' as const, apps: { cmaf: { format: 'fmp4' as const } }, windowSegments: 30, graceMs: 60_000 },
};

async function playlist(gw: TestGateway, path: string): Promise<string | undefined> {
  const res = await fetch(gw.httpUrl(path));
  return res.status === 200 ? res.text() : undefined;
}

/** The first video frame of a segment (an fMP4 one is read with its init segment). */
async function firstFrameIsKey(dir: string, gw: TestGateway, base: string, uri: string, init: string | undefined): Promise<boolean> {
  const parts = [...(init ? [init] : []), uri];
  const bytes = Buffer.concat(await Promise.all(parts.map(async (p) => Buffer.from(await (await fetch(gw.httpUrl(`${base}/${p}`))).arrayBuffer()))));
  const file = join(dir, `${uri}.probe`);
  writeFileSync(file, bytes);
  const r = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=flags', '-of', 'csv=p=0', file], { timeoutMs: 20_000 });
  return r.stdout.trim().split('\n')[0]?.startsWith('K') === true;
}

for (const [app, format] of [['live', 'ts'], ['cmaf', 'fmp4']] as const) {
  test(`${format} HLS of a 20 s publish: codecs and size, duration, every frame once, keyframe starts, clean decode`, async (t) => {
    const gw = await startTestGateway(HLS_CONFIG);
    t.teardown(() => gw.close());
    const dir = mkdtempSync(join(tmpdir(), 'trib-hls-'));
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const sent = join(dir, 'sent.flv');
    await encodeFlv(sent, { seconds: 20, width: 640, height: 360 });
    const ff = publishFile(gw.rtmpUrl(`${app}/show`), sent, 20);
    t.teardown(() => ff.kill());
    t.is((await ff.done).code, 0);
    const base = `/hls/${app}/show`;
    const text = await waitFor(async () => {
      const p = await playlist(gw, `${base}/index.m3u8`);
      return p?.includes('#EXT-X-ENDLIST') ? p : undefined;
    }, { timeoutMs: 5000, what: 'the ended playlist' });
    const pl = parseMediaPlaylist(text);
    t.true(pl.endList);
    const total = pl.segments.reduce((a, s) => a + s.duration, 0);
    t.true(Math.abs(total - 20) <= pl.targetDuration, `playlist lasts ${total} s`);
    t.true(pl.segments.every((s) => !s.discontinuity));

    const url = gw.httpUrl(`${base}/index.m3u8`);
    const got = await countPackets(url);
    const want = await countPackets(sent);
    const v = got.find((s) => s.codec === 'h264');
    t.like(v, { width: 640, height: 360, packets: want.find((s) => s.codec === 'h264')!.packets });
    t.is(got.find((s) => s.codec === 'aac')?.packets, want.find((s) => s.codec === 'aac')!.packets);
    const decode = await run('ffmpeg', ['-v', 'error', '-i', url, '-f', 'null', '-'], { timeoutMs: 60_000 });
    t.is(decode.code, 0);
    t.is(decode.stderr.trim(), '');
    for (const s of pl.segments) {
      t.true(await firstFrameIsKey(dir, gw, base, s.uri, s.map?.uri ?? pl.map?.uri), `${s.uri} starts with a keyframe`);
    }
  });
}

test('ranges, content types, CORS and traversal', async (t) => {
  const gw = await startTestGateway(HLS_CONFIG);
  t.teardown(() => gw.close());
  const ff = publish(gw.rtmpUrl('live/rng'), { seconds: 30, width: 160, height: 120, gop: 15 });
  t.teardown(() => ff.kill());
  const text = await waitFor(() => playlist(gw, '/hls/live/rng/index.m3u8'), { timeoutMs: 15_000, what: 'a playlist' });
  const seg = parseMediaPlaylist(text).segments[0]!.uri;
  const whole = await fetch(gw.httpUrl(`/hls/live/rng/${seg}`));
  t.is(whole.headers.get('content-type'), 'video/mp2t');
  t.is(whole.headers.get('access-control-allow-origin'), '*');
  const size = (await whole.arrayBuffer()).byteLength;
  t.true(size > 1000);
  const part = await fetch(gw.httpUrl(`/hls/live/rng/${seg}`), { headers: { range: 'bytes=0-99' } });
  t.is(part.status, 206);
  t.is((await part.arrayBuffer()).byteLength, 100);
  t.is(part.headers.get('content-range'), `bytes 0-99/${size}`);
  const past = await fetch(gw.httpUrl(`/hls/live/rng/${seg}`), { headers: { range: `bytes=${size}-` } });
  t.is(past.status, 416);
  t.is(past.headers.get('content-range'), `bytes */${size}`);
  const head = await fetch(gw.httpUrl('/hls/live/rng/index.m3u8'), { method: 'HEAD' });
  t.is(head.status, 200);
  t.is(head.headers.get('content-type'), 'application/vnd.apple.mpegurl');
  t.is(head.headers.get('cache-control'), 'no-cache');
  for (const bad of ['/hls/live/../live/rng/index.m3u8', '/hls/live/%2e%2e/index.m3u8', '/hls/%2e%2e/%2e%2e/etc/passwd', '/hls/live/rng/..%2findex.m3u8', '/hls/live/nope/index.m3u8', '/hls/live/rng/seg-999999.ts']) {
    // fetch() normalises '..' away; a raw request sends the path as written.
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port: gw.httpPort, path: bad }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    t.is(status, 404, bad);
  }
});

test('a publisher that drops and returns within the grace period continues the playlist after a DISCONTINUITY', async (t) => {
  const gw = await startTestGateway(HLS_CONFIG);
  t.teardown(() => gw.close());
  const first = publish(gw.rtmpUrl('live/again'), { seconds: 5, width: 320, height: 240, gop: 30 });
  t.teardown(() => first.kill());
  t.is((await first.done).code, 0);
  await waitFor(async () => (await playlist(gw, '/hls/live/again/index.m3u8'))?.includes('#EXT-X-ENDLIST'), { timeoutMs: 5000, what: 'ENDLIST' });
  const second = publish(gw.rtmpUrl('live/again'), { seconds: 5, width: 320, height: 240, gop: 30 });
  t.teardown(() => second.kill());
  t.is((await second.done).code, 0);
  const text = await waitFor(async () => {
    const p = await playlist(gw, '/hls/live/again/index.m3u8');
    return p?.includes('#EXT-X-ENDLIST') && p.includes('#EXT-X-DISCONTINUITY') ? p : undefined;
  }, { timeoutMs: 5000, what: 'the continued playlist' });
  const pl = parseMediaPlaylist(text);
  const breaks = pl.segments.filter((s) => s.discontinuity);
  t.is(breaks.length, 1);
  t.deepEqual(pl.segments.map((s) => s.sequence), pl.segments.map((_, i) => i));
  const decode = await run('ffmpeg', ['-v', 'error', '-i', gw.httpUrl('/hls/live/again/index.m3u8'), '-f', 'null', '-'], { timeoutMs: 60_000 });
  t.is(decode.code, 0);
  t.is(decode.stderr.trim(), '');
  const frames = (await countPackets(gw.httpUrl('/hls/live/again/index.m3u8'))).find((s) => s.codec === 'h264')!.packets;
  t.is(frames, 300);
});

test('after the grace period the playlist is gone and the pool is back to zero', async (t) => {
  const gw = await startTestGateway({ hls: { graceMs: 500 } });
  t.teardown(() => gw.close());
  const ff = publish(gw.rtmpUrl('live/bye'), { seconds: 4, width: 160, height: 120, gop: 15 });
  t.teardown(() => ff.kill());
  await waitFor(() => playlist(gw, '/hls/live/bye/index.m3u8'), { timeoutMs: 15_000, what: 'a playlist' });
  t.true(gw.pool.bytesInUse > 0);
  t.is((await ff.done).code, 0);
  await waitFor(() => gw.hls.packagers === 0, { timeoutMs: 5000, what: 'the packager to go after the grace period' });
  t.is((await fetch(gw.httpUrl('/hls/live/bye/index.m3u8'))).status, 404);
  t.is(gw.pool.bytesInUse, 0);
});

for (const [app, format] of [['live', 'ts'], ['cmaf', 'fmp4']] as const) {
  test(`hls.js in Chromium plays live ${format} HLS for 5 s without a stall`, async (t) => {
    const gw = await startTestGateway({ hls: { format: 'ts', apps: { cmaf: { format: 'fmp4' } }, targetDurationMs: 1000 } });
    t.teardown(() => gw.close());
    const ff = publish(gw.rtmpUrl(`${app}/play`), { seconds: 40, width: 320, height: 240, gop: 30 });
    t.teardown(() => ff.kill());
    await waitFor(async () => ((await playlist(gw, `/hls/${app}/play/index.m3u8`))?.match(/#EXTINF/g)?.length ?? 0) >= 3, {
      timeoutMs: 20_000,
      what: 'three segments',
    });
    const result = await playWithHlsJs(t, gw.httpUrl(`/hls/${app}/play/index.m3u8`), 5);
    t.true(result.advanced >= 5);
    t.is(result.waiting, 0);
    t.deepEqual(result.errors.filter((e) => e.startsWith('fatal') || e.includes('Stalled')), []);
  });
}

test('hls.directory mirrors the playlist and segments to disk, and removes what leaves the window', async (t) => {
  const dir = mkdtempSync(join('/dev/shm', 'trib-hls-disk-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const gw = await startTestGateway({ hls: { directory: dir, windowSegments: 2, targetDurationMs: 500, graceMs: 60_000 } });
  t.teardown(() => gw.close());
  const ff = publish(gw.rtmpUrl('live/disk'), { seconds: 5, width: 160, height: 120, gop: 15 });
  t.teardown(() => ff.kill());
  t.is((await ff.done).code, 0);
  const served = await waitFor(async () => {
    const p = await playlist(gw, '/hls/live/disk/index.m3u8');
    return p?.includes('#EXT-X-ENDLIST') ? p : undefined;
  }, { timeoutMs: 5000, what: 'ENDLIST' });
  const streamDir = join(dir, 'live', 'disk');
  const onDisk = await waitFor(() => {
    const text = existsSync(join(streamDir, 'index.m3u8')) ? readFileSync(join(streamDir, 'index.m3u8'), 'utf8') : '';
    return text === served ? text : undefined;
  }, { timeoutMs: 5000, what: 'the playlist on disk' });
  const pl = parseMediaPlaylist(onDisk);
  for (const s of pl.segments) {
    const body = Buffer.from(await (await fetch(gw.httpUrl(`/hls/live/disk/${s.uri}`))).arrayBuffer());
    t.true(readFileSync(join(streamDir, s.uri)).equals(body), `${s.uri} on disk equals what is served`);
  }
  const files = readdirSync(streamDir).filter((f) => f.endsWith('.ts'));
  // The window (2) plus the segments kept for players still reading an older playlist (2).
  t.true(files.length <= 4, files.join(' '));
  t.false(files.includes('seg-0.ts'));
});
