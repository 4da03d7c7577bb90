/**
 * Transcoding in a running gateway: RTMP in, rendition streams, their HLS and the master playlist,
 * hls.js in Chromium, the cap, worker restarts after a crash and a stall, the backend choice, an Opus
 * source as WHIP delivers it, and a Chromium WHIP publisher. CPU backend (no GPU here); small sizes.
 */
import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseMasterPlaylist, parseMediaPlaylist } from '../../codecs/m3u8.ts';
import { opusHead } from '../../codecs/opus.ts';
import type { ConfigInput } from '../../config/schema.ts';
import type { TranscodeView } from '../../gateway/transcode/job.ts';
import { AUDIO_TRACK_ID, VIDEO_TRACK_ID } from '../../sessions/frame.ts';
import type { Stream } from '../../sessions/stream.ts';
import { launchChromium, newPage } from '../helpers/browser.ts';
import { encodeFlv, probeCodecs, publish, publishFile } from '../helpers/ffmpeg.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { run } from '../helpers/process.ts';
import { waitFor } from '../helpers/wait.ts';
import { publish as whipPublish } from '../helpers/whip-page.ts';
import { decodeErrors, flvMedia, oggOpus, probeFrames } from './media.ts';
import { playWithHlsJs } from '../helpers/hls-player.ts';

const dir = mkdtempSync(join(tmpdir(), 'trib-transcode-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const LADDER = [
  { name: '360p', height: 360, bitrate: '600k' },
  { name: '240p', height: 240, bitrate: '300k' },
];

function config(over: NonNullable<ConfigInput>['transcode'] = {}, hls: NonNullable<ConfigInput>['hls'] = {}): ConfigInput {
  return {
    log: { level: 'info' },
    hls: { targetDurationMs: 1000, windowSegments: 60, graceMs: 60_000, ...hls },
    transcode: { apps: { live: { renditions: LADDER } }, pool: { backend: 'auto', size: 8 }, stallMs: 3000, restartBackoffMs: 200, ...over },
  };
}

async function text(gw: TestGateway, path: string): Promise<string | undefined> {
  const res = await fetch(gw.httpUrl(path));
  return res.status === 200 ? res.text() : undefined;
}

async function streamJson(gw: TestGateway, key: string): Promise<{ transcode?: TranscodeView & { renditionOf?: string } } & Record<string, unknown>> {
  return (await (await fetch(gw.httpUrl(`/api/v1/streams/${key}`))).json()) as { transcode?: TranscodeView } & Record<string, unknown>;
}

test.serial('RTMP 720p with a two-rung ladder: master playlist of two variants, each decodable at its size, hls.js plays it; pool back to 0 and workers gone after the end', async (t) => {
  const gw = await startTestGateway(config());
  t.teardown(() => gw.close());
  const sent = join(dir, 'hd.flv');
  await encodeFlv(sent, { seconds: 14, width: 1280, height: 720, fps: 30, gop: 30 });
  const ff = publishFile(gw.rtmpUrl('live/cam'), sent, 14);
  t.teardown(() => ff.kill());

  const master = await waitFor(
    async () => {
      const m = await text(gw, '/hls/live/cam/master.m3u8');
      if (!m || parseMasterPlaylist(m).length < 2) return undefined;
      const counts = await Promise.all(['360p', '240p'].map(async (r) => ((await text(gw, `/hls/live/cam_${r}/index.m3u8`)) ?? '').split('#EXTINF').length - 1));
      return counts.every((n) => n >= 3) ? m : undefined;
    },
    { timeoutMs: 30_000, what: 'a master playlist with two variants of three segments', intervalMs: 200 },
  );
  const variants = parseMasterPlaylist(master);
  t.deepEqual(variants.map((v) => v.uri), ['../cam_360p/index.m3u8', '../cam_240p/index.m3u8']);
  t.deepEqual(variants.map((v) => v.resolution), [{ width: 640, height: 360 }, { width: 426, height: 240 }]);
  t.true(variants.every((v) => /^avc1\.[0-9a-f]{6},mp4a\.40\.2$/.test(v.codecs ?? '')), variants.map((v) => v.codecs).join(' '));
  t.true(variants[0]!.bandwidth > variants[1]!.bandwidth);

  // The API: the source lists its renditions; each rendition is a stream of protocol 'transcode'.
  const source = await streamJson(gw, 'live/cam');
  t.like(source.transcode, { state: 'running', backend: 'cpu', restarts: 0 });
  t.deepEqual(source.transcode!.renditions.map((r) => [r.name, r.stream, r.state, r.width, r.outputHeight]), [
    ['360p', 'live/cam_360p', 'active', 640, 360],
    ['240p', 'live/cam_240p', 'active', 426, 240],
  ]);
  const rendition = await streamJson(gw, 'live/cam_360p');
  t.is(rendition.protocol, 'transcode');
  t.like(rendition.transcode, { renditionOf: 'live/cam', rendition: '360p' });
  t.is(await gw.metric('tributary_transcodes_active'), 2);
  t.is(await gw.metric('tributary_transcode_pool_frames'), 8);
  t.is(await gw.metric('tributary_transcode_device_memory_bytes'), 0);

  const played = await playWithHlsJs(t, gw.httpUrl('/hls/live/cam/master.m3u8'), 4);
  t.log(`hls.js: ${played.levels} levels, advanced ${played.advanced.toFixed(1)} s at ${played.height} lines, ${played.waiting} waits, errors: ${played.errors.join(',') || 'none'}`);
  t.is(played.levels, 2);
  t.true(played.advanced >= 4);
  t.deepEqual(played.errors.filter((e) => e.startsWith('fatal')), []);

  t.is((await ff.done).code, 0);
  await waitFor(() => gw.transcode!.activeRenditions === 0 && !gw.transcode!.job('live', 'cam'), { timeoutMs: 20_000, what: 'the transcode to finish' });
  const finished = gw.logs.filter((l) => l.msg === 'transcode finished');
  t.is(finished.length, 1);
  t.is(finished[0]!.poolInUseAtEnd, 0, 'every frame back in the pool before it closed');
  t.is(await gw.metric('tributary_transcode_pool_frames_in_use'), 0);
  t.is(await gw.metric('tributary_transcode_pool_frames'), 0, 'no worker holds a pool');
  t.is(gw.logs.filter((l) => /^transcode backend/.test(l.msg)).length, 1, 'the backend choice is logged once');
  t.like(gw.logs.find((l) => /^transcode backend/.test(l.msg)), { backend: 'cpu' });

  // Every source frame made it into each variant, decodable at its size, with audio and video starting together.
  const sentVideo = flvMedia(sent).frames.filter((f) => f.kind === 'video').length;
  for (const [r, width, height] of [['360p', 640, 360], ['240p', 426, 240]] as const) {
    const url = gw.httpUrl(`/hls/live/cam_${r}/index.m3u8`);
    const pl = parseMediaPlaylist((await text(gw, `/hls/live/cam_${r}/index.m3u8`))!);
    t.true(pl.endList);
    const probed = await probeFrames(url);
    const v = probed.find((s) => s.codec === 'h264');
    const a = probed.find((s) => s.codec === 'aac');
    t.like(v, { width, height, frames: sentVideo });
    t.truthy(a && a.frames > 0);
    t.true(Math.abs(v!.startTime - a!.startTime) <= 0.04, `${r}: video starts at ${v!.startTime}, audio at ${a!.startTime}`);
    t.is(await decodeErrors(url), '', `${r} decodes cleanly`);
  }
});

test.serial('the cap: past transcode.maxConcurrent a rendition is refused, visibly, and the source carries on', async (t) => {
  const gw = await startTestGateway(config({ maxConcurrent: 1, apps: { live: { renditions: [{ name: 'low', height: 120, bitrate: '150k' }, { name: 'lower', height: 90, bitrate: '100k' }] } } }));
  t.teardown(() => gw.close());
  const ff = publish(gw.rtmpUrl('live/capped'), { seconds: 8, width: 320, height: 240, gop: 15 });
  t.teardown(() => ff.kill());
  const view = await waitFor(async () => {
    const s = await streamJson(gw, 'live/capped').catch(() => undefined);
    return s?.transcode?.renditions.some((r) => r.framesOut > 0) ? s.transcode : undefined;
  }, { timeoutMs: 20_000, what: 'the transcode to run' });
  t.like(view.renditions[0], { name: 'low', state: 'active' });
  t.like(view.renditions[1], { name: 'lower', state: 'refused', framesOut: 0 });
  t.regex(view.renditions[1]!.reason!, /transcode cap reached: 1 renditions already transcoding \(transcode\.maxConcurrent\)/);
  t.is(gw.registry.get('live', 'capped_lower'), undefined);
  t.truthy(gw.registry.get('live', 'capped_low'));
  t.is(await gw.metric('tributary_transcodes_refused_total'), 1);
  const warn = gw.logs.find((l) => l.level === 40 && /transcode refused for live\/capped_lower/.test(l.msg));
  t.truthy(warn, 'a clear log line');

  // A second source while the cap is taken: everything refused, listed, the stream itself untouched.
  const second = publish(gw.rtmpUrl('live/other'), { seconds: 6, width: 320, height: 240, gop: 15 });
  t.teardown(() => second.kill());
  const refused = await waitFor(async () => {
    const all = (await (await fetch(gw.httpUrl('/api/v1/transcodes'))).json()) as { transcodes: TranscodeView[]; activeRenditions: number; maxConcurrent: number };
    return all.transcodes.find((x) => x.source === 'live/other');
  }, { timeoutMs: 15_000, what: 'the refused transcode in /api/v1/transcodes' });
  t.is(refused.state, 'refused');
  t.true(refused.renditions.every((r) => r.state === 'refused'));
  t.is(await gw.metric('tributary_transcodes_refused_total'), 3);
  t.is(await gw.metric('tributary_transcodes_active'), 1);
  await waitFor(async () => (await text(gw, '/hls/live/other/index.m3u8')) !== undefined, { timeoutMs: 15_000, what: 'the refused source still has its own HLS' });
  const other = await streamJson(gw, 'live/other');
  t.true((other.framesIn as number) > 0);
  t.is(other.framesDropped, 0);
  t.is((await fetch(gw.httpUrl('/hls/live/other/master.m3u8'))).status, 404);
});

test.serial('a killed worker is restarted with backoff, and so is a stalled one; the rendition stream lives on and decodes', async (t) => {
  const gw = await startTestGateway(config({ apps: { live: { renditions: [{ name: 'low', height: 120, bitrate: '150k' }] } }, stallMs: 1500 }));
  t.teardown(() => gw.close());
  const ff = publish(gw.rtmpUrl('live/flaky'), { seconds: 16, width: 320, height: 240, gop: 15 });
  t.teardown(() => ff.kill());
  const framesOut = async (): Promise<number> => (await streamJson(gw, 'live/flaky').catch(() => undefined))?.transcode?.renditions[0]?.framesOut ?? 0;
  await waitFor(async () => (await framesOut()) > 30, { timeoutMs: 20_000, what: 'rendition frames' });
  const job = gw.transcode!.job('live', 'flaky')!;
  const rendition = gw.registry.get('live', 'flaky_low')!;
  const firstThread = job.threadId;

  job.injectFault('crash');
  await waitFor(() => job.restarts === 1 && job.state === 'running', { timeoutMs: 10_000, what: 'a restart after the crash' });
  t.not(job.threadId, firstThread, 'a new worker thread');
  const afterCrash = await framesOut();
  await waitFor(async () => (await framesOut()) > afterCrash + 15, { timeoutMs: 10_000, what: 'frames after the restart' });
  t.is(await gw.metric('tributary_transcodes_restarted_total', { reason: 'exit' }), 1);

  job.injectFault('hang');
  await waitFor(() => job.restarts === 2 && job.state === 'running', { timeoutMs: 15_000, what: 'a restart after the stall' });
  const afterStall = await framesOut();
  await waitFor(async () => (await framesOut()) > afterStall + 15, { timeoutMs: 10_000, what: 'frames after the second restart' });
  t.is(await gw.metric('tributary_transcodes_restarted_total', { reason: 'stall' }), 1);
  t.regex((await streamJson(gw, 'live/flaky')).transcode!.lastFailure!, /stalled: no output for \d+ ms/);
  t.is(gw.registry.get('live', 'flaky_low'), rendition, 'the same rendition stream throughout');
  t.true(gw.logs.some((l) => l.msg === 'transcode restarting' && typeof l.delayMs === 'number'));

  t.is((await ff.done).code, 0);
  await waitFor(() => gw.transcode!.activeRenditions === 0, { timeoutMs: 15_000, what: 'the end' });
  const url = gw.httpUrl('/hls/live/flaky_low/index.m3u8');
  const dts = await run('ffprobe', ['-v', 'error', '-select_streams', 'v:0', '-show_entries', 'packet=dts', '-of', 'json', url], { timeoutMs: 30_000 });
  const times = (JSON.parse(dts.stdout) as { packets: Array<{ dts?: number }> }).packets.map((p) => p.dts);
  t.true(times.length > 100);
  const back = times.findIndex((v, i) => v === undefined || (i > 0 && v <= times[i - 1]!));
  t.is(back, -1, `DTS only increases across the restarts (${times.slice(Math.max(0, back - 3), back + 3).join(' ')})`);
  t.is(await decodeErrors(url), '');
});

test.serial('backend gpu without a CUDA device stops the start with a clear error; without renditions nothing is probed', async (t) => {
  await t.throwsAsync(startTestGateway(config({ pool: { backend: 'gpu' } })), {
    message: /^transcode\.pool\.backend is gpu but no CUDA device can be used: libcuda\.so\.1 \(from the NVIDIA driver\) was not found/,
  });
  const gw = await startTestGateway({ log: { level: 'info' } });
  t.teardown(() => gw.close());
  t.is(gw.transcode, undefined);
  t.false(gw.logs.some((l) => /^transcode backend/.test(l.msg)));
});

test.serial('an Opus source as WHIP delivers it, with a copy and a scaled rendition: MPEG-TS HLS with H.264 and AAC that ffprobe decodes, audio and video starting together', async (t) => {
  const gw = await startTestGateway(config({ apps: { live: { renditions: [{ name: 'aac' }, { name: '180p', height: 180, bitrate: '250k' }] } } }));
  t.teardown(() => gw.close());
  const flv = join(dir, 'whip-like.flv');
  const ogg = join(dir, 'whip-like.ogg');
  await encodeFlv(flv, { seconds: 6, width: 640, height: 360, fps: 30, gop: 30, audio: false });
  const enc = await run('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '6', '-ac', '2', '-c:a', 'libopus', '-b:a', '64k', '-f', 'ogg', ogg], { timeoutMs: 60_000 });
  t.is(enc.code, 0, enc.stderr);
  const video = flvMedia(flv);
  const opus = oggOpus(ogg);
  // A live WebRTC source: no pre-skip, both tracks from 0 on the 90 kHz clock.
  let closed = '';
  const stream: Stream = await gw.registry.publish({ app: 'live', name: 'browser', protocol: 'webrtc', remoteAddress: 'test' }, { protocol: 'webrtc', remoteAddress: 'test', close: (r) => (closed = r) });
  stream.setTrack({ ...video.video!, id: VIDEO_TRACK_ID });
  stream.setTrack({ kind: 'audio', id: AUDIO_TRACK_ID, codec: 'opus', config: opusHead({ channels: 2 }), sampleRate: 48_000, channels: 2, codecString: 'opus' });
  const v0 = video.frames[0]!.dts;
  const events = [
    ...video.frames.map((f) => ({ ...f, track: VIDEO_TRACK_ID, dts: f.dts - v0, pts: f.pts - v0, codec: 'h264' as const })),
    ...opus.packets.map((p) => ({ track: AUDIO_TRACK_ID, kind: 'audio' as const, codec: 'opus' as const, dts: p.pts, pts: p.pts, keyframe: true, data: p.data })),
  ].sort((a, b) => a.dts - b.dts);
  // Faster than real time, in slices, as a burst of RTP would arrive.
  for (let i = 0; i < events.length; i += 20) {
    for (const e of events.slice(i, i + 20)) stream.push({ ...e, data: gw.pool.copyOf(e.data) });
    await new Promise((r) => setTimeout(r, 10));
  }
  stream.end('DELETE');
  await waitFor(async () => (await text(gw, '/hls/live/browser_aac/index.m3u8'))?.includes('#EXT-X-ENDLIST'), { timeoutMs: 20_000, what: 'the ended rendition playlist' });
  t.is(closed, '');
  await waitFor(async () => (await text(gw, '/hls/live/browser_180p/index.m3u8'))?.includes('#EXT-X-ENDLIST'), { timeoutMs: 20_000, what: 'the ended 180p playlist' });
  for (const [r, width, height] of [['aac', 640, 360], ['180p', 320, 180]] as const) {
    const url = gw.httpUrl(`/hls/live/browser_${r}/index.m3u8`);
    const probed = await probeFrames(url);
    const v = probed.find((s) => s.codec === 'h264');
    const a = probed.find((s) => s.codec === 'aac');
    t.like(v, { width, height, frames: video.frames.length });
    t.like(a, { sampleRate: 48_000, channels: 2 });
    // 6 s of Opus is 281.25 AAC frames: all of it but the priming frame before 0.
    t.true(a!.frames >= 280 && a!.frames <= 283, `${r}: ${a!.frames} AAC frames`);
    t.true(Math.abs(v!.startTime - a!.startTime) <= 0.04, `${r}: video starts at ${v!.startTime}, audio at ${a!.startTime}`);
    t.is(await decodeErrors(url), '', `${r} decodes cleanly`);
  }
  const master = parseMasterPlaylist((await text(gw, '/hls/live/browser/master.m3u8'))!);
  t.deepEqual(master.map((m) => m.uri), ['../browser_aac/index.m3u8', '../browser_180p/index.m3u8']);
  t.is(master[0]!.codecs, `${video.video!.codecString},mp4a.40.2`);
});

test.serial('Chromium publishes over WHIP (H.264 + Opus): the copy rendition reaches MPEG-TS HLS with AAC that ffprobe decodes, audio and video within 40 ms', async (t) => {
  const gw = await startTestGateway(config({ apps: { live: { renditions: [{ name: 'aac' }, { name: '180p', height: 180, bitrate: '250k' }] } } }));
  t.teardown(() => gw.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await newPage(browser);
  await page.goto(gw.httpUrl('/healthz').replace('127.0.0.1', 'localhost'));
  const res = await whipPublish(page, gw.httpUrl('/whip/live/chrome'), 'token');
  t.is(res.status, 201, res.error);
  // Chrome sends keyframes rarely: the copy cuts segments only at those, the scaled rendition at least every 2 s.
  await waitFor(async () => ((await text(gw, '/hls/live/chrome_180p/index.m3u8')) ?? '').split('#EXTINF').length - 1 >= 3, { timeoutMs: 30_000, what: 'three segments of the 180p rendition' });
  // RTMP play of the copy rendition carries the AAC too.
  t.deepEqual((await probeCodecs(gw.rtmpUrl('live/chrome_aac'))).sort(), ['aac', 'h264']);
  const del = await fetch(gw.httpUrl(res.location!), { method: 'DELETE', headers: { authorization: 'Bearer token' } });
  t.is(del.status, 200);
  for (const r of ['aac', '180p']) {
    await waitFor(async () => (await text(gw, `/hls/live/chrome_${r}/index.m3u8`))?.includes('#EXT-X-ENDLIST'), { timeoutMs: 20_000, what: `the ended ${r} playlist` });
  }
  for (const r of ['aac', '180p']) {
    const url = gw.httpUrl(`/hls/live/chrome_${r}/index.m3u8`);
    const probed = await probeFrames(url);
    const v = probed.find((s) => s.codec === 'h264');
    const a = probed.find((s) => s.codec === 'aac');
    t.log(`${r}: ${JSON.stringify(probed)}`);
    t.truthy(v && v.frames > 60, `${r}: video`);
    t.truthy(a && a.frames > 100, `${r}: AAC audio`);
    t.like(a, { sampleRate: 48_000 });
    if (r === '180p') t.like(v, { height: 180 });
    t.true(Math.abs(v!.startTime - a!.startTime) <= 0.04, `${r}: video starts at ${v!.startTime}, audio at ${a!.startTime}`);
    t.is(await decodeErrors(url), '', `${r} decodes cleanly`);
  }
});
