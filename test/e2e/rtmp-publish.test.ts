import test from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeAmf0 } from '../../codecs/amf0.ts';
import { MessageType } from '../../codecs/rtmp/chunks.ts';
import { command, setChunkSize } from '../../codecs/rtmp/messages.ts';
import type { Stream } from '../../sessions/stream.ts';
import { countPackets, encodeFlv, publish, publishFile } from '../helpers/ffmpeg.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { RawRtmp } from '../helpers/raw-rtmp.ts';
import { waitFor } from '../helpers/wait.ts';

/** These tests look at ingest alone: HLS would hold segments in the pool for its grace period. */
const NO_HLS = { hls: { enabled: false } };

interface Ended {
  framesIn: number;
  perTrack: Map<string, number>;
  reason: string;
}

function recordEnds(gw: TestGateway): Map<string, Ended> {
  const ended = new Map<string, Ended>();
  gw.registry.on('unpublish', (s: Stream, reason: string) => {
    const perTrack = new Map<string, number>();
    for (const t of s.tracks.values()) perTrack.set(t.codec, s.trackStats.get(t.id)?.frames ?? 0);
    ended.set(s.key, { framesIn: s.framesIn, perTrack, reason });
  });
  return ended;
}

async function apiStreams(gw: TestGateway): Promise<Array<Record<string, unknown> & { tracks: Array<Record<string, unknown>> }>> {
  const res = await fetch(gw.httpUrl('/api/v1/streams'));
  return ((await res.json()) as { streams: Array<Record<string, unknown> & { tracks: Array<Record<string, unknown>> }> }).streams;
}

test('ffmpeg publishes 10 s of 720p H.264 and AAC: listed with codecs and size, every frame counted, pool back to zero', async (t) => {
  const gw = await startTestGateway(NO_HLS);
  t.teardown(() => gw.close());
  const dir = mkdtempSync(join(tmpdir(), 'trib-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ended = recordEnds(gw);
  const copy = join(dir, 'sent.flv');
  await encodeFlv(copy, { seconds: 10, width: 1280, height: 720 });
  const ff = publishFile(gw.rtmpUrl('live/test'), copy, 10);
  t.teardown(() => ff.kill());

  const listed = await waitFor(
    async () => {
      const s = (await apiStreams(gw)).find((x) => x.app === 'live' && x.name === 'test');
      return s && s.tracks.length === 2 ? s : undefined;
    },
    { timeoutMs: 15_000, what: 'the stream in the API with two tracks' },
  );
  t.is(listed.protocol, 'rtmp');
  const video = listed.tracks.find((x) => x.kind === 'video')!;
  const audio = listed.tracks.find((x) => x.kind === 'audio')!;
  t.like(video, { codec: 'h264', width: 1280, height: 720 });
  t.like(audio, { codec: 'aac', sampleRate: 48000, channels: 1 });
  t.regex(String(video.codecString), /^avc1\.[0-9a-f]{6}$/);

  const result = await ff.done;
  t.is(result.code, 0, result.stderr);
  const end = await waitFor(() => ended.get('live/test'), { timeoutMs: 5000, what: 'the stream to end' });
  t.is(gw.registry.size, 0);
  const sent = await countPackets(copy);
  t.is(end.perTrack.get('h264'), sent.find((s) => s.codec === 'h264')!.packets);
  t.is(end.perTrack.get('aac'), sent.find((s) => s.codec === 'aac')!.packets);
  t.is(end.perTrack.get('h264'), 300);
  t.is(gw.pool.bytesInUse, 0);
  t.is(gw.pool.buffersInUse, 0);
  t.true((await gw.metric('tributary_bytes_in_total', { protocol: 'rtmp' })) > 1_000_000);
  t.is((await apiStreams(gw)).length, 0);
});

test('a second publisher takes over a silent one within 1 s', async (t) => {
  const gw = await startTestGateway(NO_HLS);
  t.teardown(() => gw.close());
  const first = publish(gw.rtmpUrl('live/cam'), { seconds: 30, width: 320, height: 240 });
  t.teardown(() => first.kill());
  const stream1 = await waitFor(() => gw.registry.get('live', 'cam'), { timeoutMs: 10_000, what: 'the first publisher' });
  await waitFor(() => stream1.framesIn > 10, { timeoutMs: 10_000, what: 'frames from the first publisher' });
  first.child.kill('SIGSTOP');
  t.teardown(() => first.child.kill('SIGCONT'));

  const second = publish(gw.rtmpUrl('live/cam'), { seconds: 30, width: 320, height: 240 });
  t.teardown(() => second.kill());
  const stream2 = await waitFor(
    () => {
      const s = gw.registry.get('live', 'cam');
      return s && s !== stream1 ? s : undefined;
    },
    { timeoutMs: 10_000, what: 'the second publisher' },
  );
  const takenAt = performance.now();
  t.is(stream1.ended, 'takeover');
  await waitFor(() => stream2.framesIn > 0, { timeoutMs: 1000, what: 'frames from the new publisher within 1 s' });
  t.true(performance.now() - takenAt < 1000);
  t.true(gw.logs.some((l) => l.msg === 'session end' && String(l.reason).startsWith('taken over by rtmp publisher')));
});

test('deadlines: a silent client and a client stuck after C0+C1 are cut at the handshake deadline; a stalled publisher at read-idle', async (t) => {
  const gw = await startTestGateway({ ...NO_HLS, deadlines: { handshakeMs: 400, idleMs: 800, writeStallMs: 2000 } });
  t.teardown(() => gw.close());

  const openAt = performance.now();
  const silent = connect(gw.rtmpPort, '127.0.0.1');
  silent.on('error', () => {});
  silent.resume();
  const silentClosed = new Promise<number>((r) => silent.once('close', () => r(performance.now() - openAt)));
  const half = connect(gw.rtmpPort, '127.0.0.1', () => half.write(Buffer.concat([Buffer.from([3]), Buffer.alloc(1536)])));
  half.on('error', () => {});
  half.resume();
  const halfClosed = new Promise<number>((r) => half.once('close', () => r(performance.now() - openAt)));
  const [silentMs, halfMs] = await Promise.all([silentClosed, halfClosed]);
  t.true(silentMs >= 350 && silentMs < 1500, `silent client closed after ${silentMs} ms`);
  t.true(halfMs >= 350 && halfMs < 1500, `half-handshake client closed after ${halfMs} ms`);
  t.is(await gw.metric('tributary_socket_deadline_expired_total', { protocol: 'rtmp', kind: 'handshake' }), 2);

  const ff = publish(gw.rtmpUrl('live/stall'), { seconds: 30, width: 320, height: 240 });
  t.teardown(() => ff.kill());
  const s = await waitFor(() => gw.registry.get('live', 'stall'), { timeoutMs: 10_000, what: 'the publisher' });
  await waitFor(() => s.framesIn > 10, { timeoutMs: 10_000, what: 'frames' });
  ff.child.kill('SIGSTOP');
  t.teardown(() => ff.child.kill('SIGCONT'));
  const stoppedAt = performance.now();
  await waitFor(() => s.ended, { timeoutMs: 3000, what: 'the stalled publisher to be closed' });
  const after = performance.now() - stoppedAt;
  t.true(after < 2000, `stalled publisher closed after ${after} ms`);
  t.is(await gw.metric('tributary_socket_deadline_expired_total', { protocol: 'rtmp', kind: 'idle' }), 1);
  t.true(gw.logs.some((l) => l.msg === 'session end' && l.reason === 'read-idle deadline expired'));
  await waitFor(() => gw.pool.bytesInUse === 0, { timeoutMs: 2000, what: 'the pool to drain' });
});

test('bad input closes only its own connection, with a reason; a good publisher beside it loses nothing', async (t) => {
  const gw = await startTestGateway({ ...NO_HLS, rtmp: { maxChunkSize: 65536, maxMessageSize: 1 << 20 } });
  t.teardown(() => gw.close());
  const dir = mkdtempSync(join(tmpdir(), 'trib-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ended = recordEnds(gw);
  const copy = join(dir, 'good.flv');
  await encodeFlv(copy, { seconds: 6, width: 320, height: 240 });
  const good = publishFile(gw.rtmpUrl('live/good'), copy, 6);
  t.teardown(() => good.kill());
  await waitFor(() => gw.registry.get('live', 'good'), { timeoutMs: 10_000, what: 'the good publisher' });

  const garbage = await RawRtmp.open(gw.rtmpPort);
  garbage.write(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
  await garbage.closed;

  const bigChunk = await RawRtmp.open(gw.rtmpPort);
  await bigChunk.handshake();
  bigChunk.send(setChunkSize(0x7fffffff), 2);
  await bigChunk.closed;

  const truncated = await RawRtmp.open(gw.rtmpPort);
  await truncated.handshake();
  const amf = encodeAmf0('connect', 1, { app: 'live', tcUrl: 'rtmp://x/live' });
  truncated.send({ type: MessageType.CommandAmf0, streamId: 0, timestamp: 0, payload: amf.subarray(0, amf.length - 9) });
  await truncated.closed;

  const huge = await RawRtmp.open(gw.rtmpPort);
  await huge.handshake();
  huge.send(command(0, 'connect', 1, { app: 'live' }));
  // A header announcing a 2 MiB video message: over the 1 MiB limit, refused before buffering.
  const header = Buffer.from([0x06, 0, 0, 0, 0x20, 0, 0, MessageType.Video, 1, 0, 0, 0]);
  huge.write(header);
  await huge.closed;

  const result = await good.done;
  t.is(result.code, 0, result.stderr);
  const end = await waitFor(() => ended.get('live/good'), { timeoutMs: 5000, what: 'the good stream to end' });
  const sent = await countPackets(copy);
  t.is(end.reason, 'unpublished');
  t.is(end.perTrack.get('h264'), sent.find((s) => s.codec === 'h264')!.packets);
  t.is(end.perTrack.get('aac'), sent.find((s) => s.codec === 'aac')!.packets);

  const reasons = gw.logs.filter((l) => l.msg === 'session end' && String(l.reason).startsWith('bad input')).map((l) => String(l.reason));
  t.is(reasons.length, 4, reasons.join('\n'));
  t.true(reasons.some((r) => r.includes('version')), 'garbage handshake');
  t.true(reasons.some((r) => r.includes('chunk size')), 'oversized chunk size');
  t.true(reasons.some((r) => r.startsWith('bad input: amf0')), 'truncated AMF');
  t.true(reasons.some((r) => r.includes('exceeds the limit')), 'message over the limit');
  t.is(await gw.metric('tributary_rejected_input_total', { protocol: 'rtmp' }), 4);
  t.is(gw.pool.bytesInUse, 0);
});

test('a refused publish gets NetStream.Publish.BadName and no stream; the right key is accepted', async (t) => {
  const gw = await startTestGateway({ auth: { streamKeys: { live: ['s3cret'] } } });
  t.teardown(() => gw.close());
  const bad = await RawRtmp.open(gw.rtmpPort);
  await bad.handshake();
  bad.send(command(0, 'connect', 1, { app: 'live' }));
  bad.send(command(0, 'createStream', 2, null));
  bad.send(command(1, 'publish', 3, null, 'cam?key=wrong', 'live'));
  const status = await bad.waitFor((m) => m.type === MessageType.CommandAmf0 && m.payload.includes('NetStream.Publish.BadName'));
  t.true(status.payload.includes('invalid stream key'));
  t.false(bad.received.some((m) => m.payload.includes('NetStream.Publish.Start')));
  await bad.closed;
  t.is(gw.registry.size, 0);

  const good = publish(gw.rtmpUrl('live/cam?key=s3cret'), { seconds: 2, width: 160, height: 120 });
  t.teardown(() => good.kill());
  const s = await waitFor(() => gw.registry.get('live', 'cam'), { timeoutMs: 10_000, what: 'the keyed publisher' });
  t.is(s.name, 'cam');
  t.is((await good.done).code, 0);
});

test('DELETE /api/v1/streams/{app}/{name} kicks the publisher', async (t) => {
  const gw = await startTestGateway(NO_HLS);
  t.teardown(() => gw.close());
  const ff = publish(gw.rtmpUrl('live/kick'), { seconds: 30, width: 160, height: 120 });
  t.teardown(() => ff.kill());
  const s = await waitFor(() => gw.registry.get('live', 'kick'), { timeoutMs: 10_000, what: 'the publisher' });
  t.is((await fetch(gw.httpUrl('/api/v1/streams/live/nope'), { method: 'DELETE' })).status, 404);
  t.is((await fetch(gw.httpUrl('/api/v1/streams/live/kick'), { method: 'DELETE' })).status, 204);
  t.is(s.ended, 'kicked');
  const r = await ff.done;
  t.not(r.code, 0);
  t.is(gw.registry.size, 0);
});

test('the events WebSocket tells of a publish and its end', async (t) => {
  const { WebSocket } = await import('ws');
  const gw = await startTestGateway(NO_HLS);
  t.teardown(() => gw.close());
  const ws = new WebSocket(`ws://127.0.0.1:${gw.httpPort}/api/v1/events`);
  t.teardown(() => ws.terminate());
  const events: Array<{ type: string; stream?: { name: string }; name?: string; reason?: string }> = [];
  ws.on('message', (d) => events.push(JSON.parse(String(d)) as (typeof events)[number]));
  await waitFor(() => events.some((e) => e.type === 'hello'), { timeoutMs: 5000, what: 'hello' });
  const ff = publish(gw.rtmpUrl('live/ev'), { seconds: 1, width: 160, height: 120 });
  t.teardown(() => ff.kill());
  await waitFor(() => events.find((e) => e.type === 'unpublish'), { timeoutMs: 15_000, what: 'the unpublish event' });
  t.deepEqual(
    events.map((e) => e.type),
    ['hello', 'publish', 'unpublish'],
  );
  t.is(events[1]!.stream!.name, 'ev');
  t.like(events[2], { name: 'ev', reason: 'unpublished' });
});
