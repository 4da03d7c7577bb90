/**
 * Re-push against two foreign servers (nginx-rtmp and node-media-server) at once, a player that stops
 * reading, and the outbound API.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseMediaPlaylist } from '../../codecs/m3u8.ts';
import { MessageType } from '../../codecs/rtmp/chunks.ts';
import { command } from '../../codecs/rtmp/messages.ts';
import type { ConfigInput } from '../../config/schema.ts';
import type { Stream } from '../../sessions/stream.ts';
import { countPackets, publish } from '../helpers/ffmpeg.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { startNginx } from '../helpers/nginx.ts';
import { startNms } from '../helpers/nms.ts';
import { run, start, type Proc } from '../helpers/process.ts';
import { RawRtmp } from '../helpers/raw-rtmp.ts';
import { waitFor } from '../helpers/wait.ts';

const FAST: ConfigInput = {
  outbound: { connectTimeoutMs: 1000, backoff: { initialMs: 200, maxMs: 1600 }, breaker: { failures: 3 } },
  deadlines: { handshakeMs: 1000, idleMs: 3000, writeStallMs: 3000 },
};

async function closeClean(t: ExecutionContext, gw: TestGateway): Promise<void> {
  await gw.close();
  t.is(gw.pool.bytesInUse, 0, 'pool bytes back to 0');
  t.is(gw.pool.buffersInUse, 0);
  t.is(gw.pulls.holding, 0, 'no pull holds a timer, attempt or session');
  t.is(gw.pushes.holding, 0, 'no push holds a timer, attempt, connection or queue');
  t.is(gw.registry.size, 0);
}

/** Frames per codec of every stream that ended. */
function recordEnds(gw: TestGateway): Map<string, { reason: string; perTrack: Map<string, number> }> {
  const ended = new Map<string, { reason: string; perTrack: Map<string, number> }>();
  gw.registry.on('unpublish', (s: Stream, reason: string) => {
    const perTrack = new Map<string, number>();
    for (const tr of s.tracks.values()) perTrack.set(tr.codec, s.trackStats.get(tr.id)?.frames ?? 0);
    ended.set(s.key, { reason, perTrack });
  });
  return ended;
}

/**
 * ffmpeg playing a foreign server's stream into an FLV file. It waits (both servers hold a player until
 * the name is published) and ends 3 s after the media stops (-rw_timeout). `playing` resolves once it
 * has sent its play command, so a publish that starts after it is read from its first frame.
 */
function reader(url: string, file: string): { proc: Proc; playing: Promise<unknown> } {
  const proc = start('ffmpeg', ['-v', 'debug', '-rw_timeout', '3000000', '-i', url, '-c', 'copy', '-f', 'flv', '-y', file], {
    timeoutMs: 120_000,
    keep: 50_000,
  });
  const playing = waitFor(() => /Sending play command/.test(proc.stderr()) || undefined, { timeoutMs: 15_000, what: `ffmpeg to play ${url}` });
  return { proc, playing };
}

async function probeFile(file: string): Promise<{ duration: number; streams: Array<{ codec_name: string; width?: number; height?: number; nb_read_packets?: string }> }> {
  const r = await run(
    'ffprobe',
    ['-v', 'error', '-count_packets', '-show_entries', 'format=duration:stream=codec_name,width,height,nb_read_packets', '-of', 'json', file],
    { timeoutMs: 30_000 },
  );
  if (r.code !== 0) throw new Error(`ffprobe ${file}: ${r.stderr}`);
  const j = JSON.parse(r.stdout) as { format: { duration: string }; streams: Array<{ codec_name: string; width?: number; height?: number; nb_read_packets?: string }> };
  return { duration: Number(j.format.duration), streams: j.streams };
}

test.serial('re-push to nginx-rtmp and node-media-server at once: both read back whole; killing one leaves the other and HLS untouched', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-push-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const nginx = await startNginx();
  t.teardown(() => nginx.dispose());
  const nms = await startNms();
  t.teardown(() => nms.dispose());
  const gw = await startTestGateway({
    ...FAST,
    hls: { targetDurationMs: 1000, windowSegments: 30 },
    // nginx's URL names only the app (the stream name is appended); NMS's uses the template.
    push: { live: [nginx.url('live'), nms.url('live/{name}')] },
  });
  t.teardown(() => gw.close());
  const ended = recordEnds(gw);

  // Phase 1: both destinations up; a 6 s publish arrives whole at both.
  const r1 = reader(nginx.url('live/one'), join(dir, 'nginx-one.flv'));
  const r2 = reader(nms.url('live/one'), join(dir, 'nms-one.flv'));
  t.teardown(() => r1.proc.kill());
  t.teardown(() => r2.proc.kill());
  await Promise.all([r1.playing, r2.playing]);
  const ff1 = publish(gw.rtmpUrl('live/one'), { seconds: 6, width: 640, height: 360 });
  t.teardown(() => ff1.kill());
  const s1 = await waitFor(() => gw.registry.get('live', 'one'), { timeoutMs: 10_000, what: 'the publish' });
  await waitFor(() => gw.pushes.list().every((p) => p.sessions.some((x) => x.state === 'up')), { timeoutMs: 10_000, what: 'both pushes up' });
  t.is((await ff1.done).code, 0);
  await waitFor(() => s1.ended, { timeoutMs: 5000, what: 'the stream to end' });
  const [a, b] = await Promise.all([r1.proc.done, r2.proc.done]);
  t.not(a.signal, 'SIGKILL');
  t.not(b.signal, 'SIGKILL');
  const sent = ended.get('live/one')!.perTrack;
  t.is(sent.get('h264'), 180);
  for (const name of ['nginx-one', 'nms-one']) {
    const got = await probeFile(join(dir, `${name}.flv`));
    const v = got.streams.find((s) => s.codec_name === 'h264');
    const au = got.streams.find((s) => s.codec_name === 'aac');
    t.like(v, { width: 640, height: 360 }, name);
    t.is(Number(v?.nb_read_packets), sent.get('h264')!, `${name}: every video frame`);
    t.true(Math.abs(Number(au?.nb_read_packets) - sent.get('aac')!) <= 2, `${name}: ${au?.nb_read_packets} of ${sent.get('aac')} audio frames`);
    t.true(Math.abs(got.duration - 6) <= 0.5, `${name}: ${got.duration} s`);
  }
  // Each push starts at the stream's first keyframe: an audio frame published before it and before the
  // push was up is not part of any push (that is the GOP cache's rule), so allow a couple.
  const out = await gw.metric('tributary_rtmp_frames_out_total', { output: 'push' });
  const total = [...sent.values()].reduce((x, y) => x + y, 0);
  t.true(out <= 2 * total && out >= 2 * total - 4, `${out} frames pushed for 2 x ${total} published`);

  // Phase 2: node-media-server dies mid-stream; nginx and HLS do not notice.
  const r3 = reader(nginx.url('live/two'), join(dir, 'nginx-two.flv'));
  t.teardown(() => r3.proc.kill());
  await r3.playing;
  const ff2 = publish(gw.rtmpUrl('live/two'), { seconds: 10, width: 640, height: 360 });
  t.teardown(() => ff2.kill());
  const s2 = await waitFor(() => gw.registry.get('live', 'two'), { timeoutMs: 10_000, what: 'the second publish' });
  await waitFor(() => s2.framesIn > 90, { timeoutMs: 10_000, what: '90 frames' });
  await nms.stop();
  const nmsTarget = nms.url('live/two');
  await waitFor(() => (gw.breakers.get(nmsTarget)?.attempts.filter((x) => !x.ok).length ?? 0) >= 3, {
    timeoutMs: 10_000,
    what: 'failed reconnects to node-media-server',
  });
  t.is(gw.breakers.get(nmsTarget)!.state, 'open');
  t.is(gw.breakers.get(nginx.url('live/two'))!.state, 'closed');
  t.is(s2.ended, undefined, 'the stream goes on');
  t.is((await ff2.done).code, 0);
  await waitFor(() => ended.get('live/two'), { timeoutMs: 5000, what: 'the second stream to end' });
  const sent2 = ended.get('live/two')!;
  t.is(sent2.reason, 'unpublished');
  await r3.proc.done;
  const nginxTwo = await probeFile(join(dir, 'nginx-two.flv'));
  t.is(Number(nginxTwo.streams.find((s) => s.codec_name === 'h264')?.nb_read_packets), sent2.perTrack.get('h264')!, 'nginx got every video frame');
  t.true(Math.abs(nginxTwo.duration - 10) <= 0.5, `nginx recording lasts ${nginxTwo.duration} s`);

  const text = await waitFor(
    async () => {
      const res = await fetch(gw.httpUrl('/hls/live/two/index.m3u8'));
      const p = res.status === 200 ? await res.text() : undefined;
      return p?.includes('#EXT-X-ENDLIST') ? p : undefined;
    },
    { timeoutMs: 5000, what: 'the ended HLS playlist' },
  );
  const pl = parseMediaPlaylist(text);
  t.false(pl.segments.some((s) => s.discontinuity), 'no discontinuity in HLS');
  const hls = await countPackets(gw.httpUrl('/hls/live/two/index.m3u8'));
  t.is(hls.find((s) => s.codec === 'h264')?.packets, sent2.perTrack.get('h264'), 'HLS has every video frame');
  // The packager may leave out an audio frame that precedes the first keyframe: audio within 2 frames.
  const hlsAudio = hls.find((s) => s.codec === 'aac')?.packets ?? 0;
  t.true(Math.abs(hlsAudio - sent2.perTrack.get('aac')!) <= 2, `HLS has ${hlsAudio} of ${sent2.perTrack.get('aac')} audio frames`);
  t.true((await gw.metric('tributary_outbound_attempts_total', { kind: 'push', result: 'connect' })) >= 3);
  await closeClean(t, gw);
});

test.serial('a player that stops reading skips to keyframes in its bounded queue, then the write-stall deadline drops it; the publisher goes on and pool bytes stay bounded', async (t) => {
  const queueBytes = 400_000;
  const gw = await startTestGateway({
    hls: { enabled: false },
    deadlines: { handshakeMs: 2000, idleMs: 5000, writeStallMs: 2500 },
    streams: { outputQueueBytes: queueBytes, gopCacheBytes: 4_000_000 },
  });
  t.teardown(() => gw.close());
  // Lossless H.264 (~5 Mbit/s at 640x360): socket buffers fill within seconds.
  const ff = start(
    'ffmpeg',
    [
      ...['-hide_banner', '-loglevel', 'error', '-re', '-f', 'lavfi', '-i', 'testsrc2=size=640x360:rate=30'],
      ...['-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000', '-t', '60'],
      ...['-c:v', 'libx264', '-preset', 'ultrafast', '-qp', '0', '-g', '30', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-f', 'flv', gw.rtmpUrl('live/big')],
    ],
    { timeoutMs: 90_000 },
  );
  t.teardown(() => ff.kill());
  const s = await waitFor(() => gw.registry.get('live', 'big'), { timeoutMs: 10_000, what: 'the publisher' });
  await waitFor(() => s.framesIn > 60, { timeoutMs: 10_000, what: 'frames' });

  // The pool with no player: the GOP cache, which swings with the GOP.
  let baseline = 0;
  let samples = 0;
  await waitFor(
    () => {
      baseline = Math.max(baseline, gw.pool.bytesInUse);
      return ++samples >= 60 || undefined;
    },
    { timeoutMs: 10_000, intervalMs: 25, what: '1.5 s of pool samples' },
  );

  const player = await RawRtmp.open(gw.rtmpPort);
  t.teardown(() => player.destroy());
  await player.handshake();
  player.send(command(0, 'connect', 1, { app: 'live' }));
  player.send(command(0, 'createStream', 2, null));
  player.send(command(1, 'play', 3, null, 'big'));
  await player.waitFor((m) => m.type === MessageType.Video && m.payload[1] === 1, 10_000);
  t.true(player.received.some((m) => m.payload.includes('NetStream.Play.Start')));
  player.socket.pause(); // stops reading: the kernel buffers fill, then the gateway's writes stall
  const pausedAt = performance.now();
  const framesAtPause = s.framesIn;

  let peak = 0;
  await waitFor(
    async () => {
      peak = Math.max(peak, gw.pool.bytesInUse);
      return (await gw.metric('tributary_socket_deadline_expired_total', { protocol: 'rtmp', kind: 'write_stall' })) === 1 || undefined;
    },
    { timeoutMs: 20_000, intervalMs: 20, what: 'the write-stall deadline to drop the player' },
  );
  const droppedAfter = performance.now() - pausedAt;
  const end = gw.logs.find((l) => l.msg === 'session end' && l.playing === 'live/big')!;
  t.is(end.reason, 'write-stall deadline expired');
  t.true(Number(end.framesDropped) > 0, `the player's queue skipped ${String(end.framesDropped)} frames to keyframes`);
  t.log(`dropped ${Math.round(droppedAfter)} ms after it stopped reading; pool peak ${peak} B, baseline ${baseline} B, queue bound ${queueBytes} B; frames skipped ${String(end.framesDropped)}`);
  // Pooled sizes round up to powers of two: a queue of `queueBytes` holds at most twice that in slabs.
  t.true(peak <= baseline + 2 * queueBytes + 512 * 1024, `pool peak ${peak} B with a stalled player (baseline ${baseline} B)`);

  t.is(s.ended, undefined, 'the publisher goes on');
  await waitFor(() => s.framesIn > framesAtPause + 120, { timeoutMs: 10_000, what: 'the publisher to keep publishing' });
  t.is(s.outputCount, 0, 'the player is detached');
  await waitFor(() => gw.pool.bytesInUse <= baseline || undefined, { timeoutMs: 5000, what: 'the pool back to its baseline' });
  t.is(await gw.metric('tributary_output_frames_dropped_total'), Number(end.framesDropped));
  await ff.kill();
  await closeClean(t, gw);
});

test.serial('the outbound API: pulls and per-stream pushes are added, listed, capped, validated and removed', async (t) => {
  const nginx = await startNginx();
  t.teardown(() => nginx.dispose());
  const src = publish(nginx.url('live/src'), { seconds: 60, width: 320, height: 240, gop: 15 });
  t.teardown(() => src.kill());
  const gw = await startTestGateway({ ...FAST, outbound: { ...FAST.outbound, maxPulls: 1, maxPushesPerStream: 1 }, push: { other: [nginx.url('x')] } });
  t.teardown(() => gw.close());
  const post = (path: string, body: unknown): Promise<Response> =>
    fetch(gw.httpUrl(path), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

  t.is((await post('/api/v1/pulls', { url: 'http://example.com/live/x', app: 'live', name: 'a' })).status, 400);
  t.is((await post('/api/v1/pulls', { url: nginx.url('live'), app: 'live', name: 'a' })).status, 400, 'a URL needs app and name');
  t.is((await post('/api/v1/pulls', { url: nginx.url('live/src'), app: 'live', name: '../a' })).status, 400);
  t.is((await post('/api/v1/pulls', { url: nginx.url('live/src'), app: 'live', name: 'a', extra: 1 })).status, 400);
  const created = await post('/api/v1/pulls', { url: nginx.url('live/src'), app: 'live', name: 'pulled' });
  t.is(created.status, 201);
  const pull = (await created.json()) as { id: string };
  t.is((await post('/api/v1/pulls', { url: nginx.url('live/src'), app: 'live', name: 'pulled' })).status, 409);
  t.is((await post('/api/v1/pulls', { url: nginx.url('live/src'), app: 'live', name: 'another' })).status, 429, 'over maxPulls');

  const s = await waitFor(() => gw.registry.get('live', 'pulled'), { timeoutMs: 20_000, what: 'the pulled stream' });
  t.is(s.publisher.protocol, 'rtmp-pull');

  // Re-push the pulled stream back to nginx under another name, and read it from there.
  const pushed = await post('/api/v1/pushes', { app: 'live', name: 'pulled', url: nginx.url('live/copy') });
  t.is(pushed.status, 201);
  const push = (await pushed.json()) as { id: string };
  t.is((await post('/api/v1/pushes', { app: 'live', name: 'pulled', url: nginx.url('live/copy2') })).status, 429, 'over maxPushesPerStream');
  t.is((await post('/api/v1/pushes', { app: 'live', name: 'pulled', url: 'rtmp://' })).status, 400);
  await waitFor(
    async () => {
      const view = (await (await fetch(gw.httpUrl(`/api/v1/pushes/${push.id}`))).json()) as { sessions: Array<{ state: string; framesOut: number }> };
      return view.sessions[0]?.state === 'up' && view.sessions[0].framesOut > 30;
    },
    { timeoutMs: 15_000, what: 'the push to run' },
  );
  const probe = await run('ffprobe', ['-v', 'error', '-show_entries', 'stream=codec_name,width,height', '-of', 'json', nginx.url('live/copy')], { timeoutMs: 30_000 });
  t.is(probe.code, 0, probe.stderr);
  t.regex(probe.stdout, /"h264"[\s\S]*"width": 320/);

  const list = (await (await fetch(gw.httpUrl('/api/v1/pushes'))).json()) as { pushes: Array<{ id: string; source: string }> };
  t.deepEqual(list.pushes.map((p) => p.source).sort(), ['api', 'config']);
  const configId = list.pushes.find((p) => p.source === 'config')!.id;
  t.is((await fetch(gw.httpUrl(`/api/v1/pushes/${configId}`), { method: 'DELETE' })).status, 409);
  t.is((await fetch(gw.httpUrl(`/api/v1/pushes/${push.id}`), { method: 'DELETE' })).status, 204);
  t.is((await fetch(gw.httpUrl(`/api/v1/pushes/${push.id}`), { method: 'DELETE' })).status, 404);
  t.is(s.outputCount, 1, 'only HLS reads the stream once the push is removed');

  const breakers = (await (await fetch(gw.httpUrl('/api/v1/breakers'))).json()) as { breakers: Array<{ target: string; state: string }> };
  t.like(breakers.breakers.find((b) => b.target === nginx.url('live/src')), { state: 'closed' });

  t.is((await fetch(gw.httpUrl(`/api/v1/pulls/${pull.id}`), { method: 'DELETE' })).status, 204);
  t.truthy(s.ended);
  t.is(gw.registry.get('live', 'pulled'), undefined);
  t.is((await (await fetch(gw.httpUrl('/api/v1/pulls'))).json() as { pulls: unknown[] }).pulls.length, 0);
  await closeClean(t, gw);
});
