/**
 * End to end: headless Debian Chromium publishes its fake camera and microphone over WHIP to the
 * gateway's routes; the Stream in a Registry is checked against the browser's own statistics.
 */
import test from 'ava';
import { launchChromium } from '../helpers/browser.ts';
import { outbound, publish } from '../helpers/whip-page.ts';
import type { VideoTrack } from '../../codecs/track.ts';
import type { Stream } from '../../sessions/stream.ts';
import { whipRoutes } from '../../gateway/webrtc/whip.ts';
import { WeriftEngine } from '../../gateway/webrtc/werift-engine.ts';
import { captureLog, recordStream, startServer, testPool, testRegistry, waitFor, type StreamRecord } from './helpers.ts';
import type { Route } from '../../gateway/http/router.ts';


const pageRoute: Route = {
  method: 'GET',
  path: /^\/$/,
  handle: (_req, res) => {
    const html = '<!doctype html><html><head><title>whip</title></head><body>publisher</body></html>';
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) });
    res.end(html);
  },
};


function setup(idleMs: number, simulatedLossPercent = 0) {
  const registry = testRegistry();
  const pool = testPool();
  const { log, lines } = captureLog();
  const engine = new WeriftEngine({ pool, simulatedLossPercent });
  const deadlines: string[] = [];
  const whip = whipRoutes({
    registry,
    pool,
    log,
    deadlines: { connectMs: 10_000, idleMs },
    maxSessions: 4,
    engine,
    onDeadline: (k) => deadlines.push(k),
  });
  const records = new Map<Stream, StreamRecord>();
  registry.on('publish', (s) => records.set(s, recordStream(s)));
  return { registry, pool, log, lines, engine, whip, deadlines, records };
}


test.serial('Chromium publishes H.264 + Opus over WHIP; frames, resolution, sync, DELETE, pool', async (t) => {
  const env = setup(10_000);
  const server = await startServer([...env.whip.routes, pageRoute]);
  t.teardown(() => server.close());
  t.teardown(() => env.whip.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  // The page's origin (localhost) differs from the WHIP URL's (127.0.0.1): CORS preflight for real.
  await page.goto(`http://localhost:${server.port}/`);

  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  const res = await publish(page, `${server.url}/whip/live/cam`, 's3cret');
  t.is(res.status, 201, res.error);
  t.regex(res.location ?? '', /^\/whip\/live\/cam\/[A-Za-z0-9_-]{16,}$/);
  t.truthy(res.etag);
  const stream = env.registry.get('live', 'cam');
  t.truthy(stream);
  const rec = env.records.get(stream!)!;
  t.is(env.whip.sessions(), 1);

  // Publish for ~8 s of media (counted from the first frame), then stop the sources so the counts settle.
  await waitFor('first video frame', 10_000, () => rec.byKind.video.frames > 0);
  const firstFrameAt = performance.now();
  await waitFor('8 s of video', 20_000, () => performance.now() - firstFrameAt >= 8000 && rec.byKind.video.frames > 0, 100);
  await page.evaluate(() => (globalThis as any).ms.getTracks().forEach((tr: { stop(): void }) => tr.stop()));
  const before = await outbound(page);
  // Stopped sources: framesEncoded stops; wait for the server's count to stop too.
  let last = -1;
  await waitFor('video frame count to settle', 5000, () => {
    const n = rec.byKind.video.frames;
    const settled = n === last && n > 0;
    last = n;
    return settled;
  }, 300);
  const browserStats = await outbound(page);
  const cpu = process.cpuUsage(cpu0);
  const wallMs = performance.now() - wall0;

  const video = rec.byKind.video;
  const audio = rec.byKind.audio;
  const vt = rec.tracks.filter((tr): tr is VideoTrack => tr.kind === 'video');
  const at = rec.tracks.filter((tr) => tr.kind === 'audio');
  t.log(`browser framesEncoded ${browserStats.framesEncoded} (before settle ${before.framesEncoded}), final ${browserStats.frameWidth}x${browserStats.frameHeight}`);
  t.log(`stream: video ${video.frames} frames (${video.keyframes} key), audio ${audio.frames} frames; configs ${vt.map((v) => `${v.width}x${v.height} ${v.codecString}`).join(' -> ')}`);
  t.log(`first DTS video ${video.firstDts}, audio ${audio.firstDts}`);
  t.log(`gateway CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms over ${wallMs.toFixed(0)} ms wall (${((100 * (cpu.user + cpu.system)) / 1000 / wallMs).toFixed(1)}% of a core, test process incl. playwright client)`);

  // Tracks: H.264 with its config from the SPS, Opus with an OpusHead.
  t.true(vt.length >= 1, 'a video track');
  t.is(at.length, 1, 'one audio track config');
  const lastVt = vt[vt.length - 1]!;
  t.is(lastVt.codec, 'h264');
  t.is(lastVt.config[0], 1, 'avcC version 1');
  t.regex(lastVt.codecString, /^avc1\.[0-9a-f]{6}$/);
  t.is(`${lastVt.width}x${lastVt.height}`, `${browserStats.frameWidth}x${browserStats.frameHeight}`, 'resolution from the SPS matches the encoder');
  t.is(at[0]!.codec, 'opus');
  t.is(at[0]!.codecString, 'opus');
  t.is(at[0]!.sampleRate, 48000);
  t.is(Buffer.from(at[0]!.config.subarray(0, 8)).toString(), 'OpusHead');

  // Frames: every encoded frame arrived (within 2%), timestamps sane, AVCC well formed.
  t.true(browserStats.framesEncoded > 100, `enough frames encoded (${browserStats.framesEncoded})`);
  const ratio = video.frames / browserStats.framesEncoded;
  t.true(Math.abs(1 - ratio) <= 0.02, `video frames ${video.frames} vs framesEncoded ${browserStats.framesEncoded}`);
  t.true(audio.frames > 300, `audio frames ${audio.frames}`);
  t.is(video.badTimestamps, 0);
  t.is(audio.badTimestamps, 0);
  t.is(video.badAvcc, 0);
  t.true(video.keyframes >= 1);
  // Audio and video start together on the shared 90 kHz timeline.
  t.true(Math.abs(video.firstDts! - audio.firstDts!) <= 3600, `first DTS video ${video.firstDts} audio ${audio.firstDts}`);
  t.true(Math.min(video.firstDts!, audio.firstDts!) === 0);

  // DELETE ends the stream and the session; the pool drains.
  const del = await fetch(`${server.url}${res.location!}`, { method: 'DELETE', headers: { authorization: 'Bearer s3cret' } });
  t.is(del.status, 200);
  await waitFor('stream end', 5000, () => rec.ended !== undefined);
  t.regex(rec.ended!, /DELETE/);
  t.is(env.registry.get('live', 'cam'), undefined);
  t.is(env.whip.sessions(), 0);
  t.is(env.engine.openPeers, 0);
  const ends = env.lines.filter((l) => l.msg === 'whip session ended');
  t.is(ends.length, 1);
  const end = ends[0]!;
  t.log(`session end: ${JSON.stringify({ ...end, time: undefined, pid: undefined, hostname: undefined })}`);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  t.log(`CPU per received RTP packet: ${(cpuMs / Number(end.packets)).toFixed(3)} ms (${end.packets} packets, ${((Number(end.bytes) * 8) / (wallMs / 1000) / 1e6).toFixed(2)} Mbit/s payload)`);
  t.is(end.sync, 'sender-reports');
  t.is(stream!.bytesIn, Number(end.bytes), 'the stream counts the RTP payload bytes received');
  t.regex(String(ends[0]!.reason), /DELETE/);
  t.is(env.lines.filter((l) => l.msg === 'whip session started').length, 1);
  await waitFor('pool to drain', 2000, () => env.pool.bytesInUse === 0);
  t.is(env.pool.buffersInUse, 0);
  t.deepEqual(env.deadlines, []);
});

test.serial('a page closed without DELETE is removed within the idle deadline', async (t) => {
  const idleMs = 1500;
  const env = setup(idleMs);
  const server = await startServer([...env.whip.routes, pageRoute]);
  t.teardown(() => server.close());
  t.teardown(() => env.whip.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`http://localhost:${server.port}/`);
  const res = await publish(page, `${server.url}/whip/live/gone`, 'tok');
  t.is(res.status, 201, res.error);
  const stream = env.registry.get('live', 'gone')!;
  const rec = env.records.get(stream)!;
  await waitFor('video frames', 10_000, () => rec.byKind.video.frames > 10);
  const ended = new Promise<string>((resolve) => stream.once('end', resolve));
  const closedAt = performance.now();
  await page.close();
  const reason = await Promise.race([
    ended,
    new Promise<string>((_, reject) => setTimeout(() => reject(new Error('not removed within idle deadline + 2 s')), idleMs + 2000).unref()),
  ]);
  const tookMs = performance.now() - closedAt;
  t.log(`removed after ${tookMs.toFixed(0)} ms: ${reason}`);
  t.true(tookMs <= idleMs + 1000, `took ${tookMs} ms`);
  t.regex(reason, /idle deadline/);
  t.deepEqual(env.deadlines, ['idle']);
  t.is(env.registry.get('live', 'gone'), undefined);
  await waitFor('session gone', 3000, () => env.whip.sessions() === 0 && env.engine.openPeers === 0);
  await waitFor('pool to drain', 2000, () => env.pool.bytesInUse === 0);
});

test.serial('with 5% of packets dropped on receive, NACK/RTX recover the video', async (t) => {
  const env = setup(10_000, 5);
  const server = await startServer([...env.whip.routes, pageRoute]);
  t.teardown(() => server.close());
  t.teardown(() => env.whip.close());
  const browser = await launchChromium();
  t.teardown(() => browser.close());
  const page = await browser.newPage();
  await page.goto(`${server.url}/`);
  const res = await publish(page, `${server.url}/whip/live/lossy`, 'tok');
  t.is(res.status, 201, res.error);
  const rec = env.records.get(env.registry.get('live', 'lossy')!)!;
  await waitFor('first video frame', 10_000, () => rec.byKind.video.frames > 0);
  const from = performance.now();
  await waitFor('6 s of video', 20_000, () => performance.now() - from >= 6000, 100);
  await page.evaluate(() => (globalThis as any).ms.getTracks().forEach((tr: { stop(): void }) => tr.stop()));
  let last = -1;
  await waitFor('video frame count to settle', 5000, () => {
    const n = rec.byKind.video.frames;
    const settled = n === last && n > 0;
    last = n;
    return settled;
  }, 300);
  const encoded = (await outbound(page)).framesEncoded;
  await env.whip.close();
  const end = env.lines.find((l) => l.msg === 'whip session ended')!;
  t.log(`video ${rec.byKind.video.frames}/${encoded} frames; lost packets ${end.lostPackets} (after NACK), dropped frames ${end.droppedFrames}, keyframe requests ${end.keyframeRequests}`);
  t.true(rec.byKind.video.frames >= encoded * 0.95, `video ${rec.byKind.video.frames} of ${encoded}`);
  t.is(rec.byKind.video.badTimestamps, 0);
  t.is(rec.byKind.audio.badTimestamps, 0);
  t.is(rec.byKind.video.badAvcc, 0);
  t.true(Number(end.lostPackets) > 0, 'loss happened (audio has no NACK)');
  await waitFor('pool to drain', 2000, () => env.pool.bytesInUse === 0);
});
