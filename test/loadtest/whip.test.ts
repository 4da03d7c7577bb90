import test from 'ava';
import { readFileSync } from 'node:fs';
import { splitAnnexB } from '../../codecs/h264.ts';
import { ensureWhipMedia } from '../../loadtest/media.ts';
import { accessUnits, buildRtpClip, opusSamples, packetizeH264, RTP_MTU_PAYLOAD, RtpFeed } from '../../loadtest/rtp-media.ts';
import { WhipPublishers } from '../../loadtest/whip-publisher.ts';
import { startTestGateway } from '../helpers/gateway.ts';
import { waitFor } from '../helpers/wait.ts';
import { startWhipAnswerer } from './whip-answerer.ts';

test('H.264 is packetized within the MTU and FU-A fragments reassemble to the NAL unit', (t) => {
  const big = Buffer.concat([Buffer.from([0x65]), Buffer.alloc(5000, 7)]);
  const small = Buffer.from([0x67, 1, 2, 3]);
  const payloads = packetizeH264([small, big]);
  t.true(payloads.every((p) => p.length <= RTP_MTU_PAYLOAD));
  t.deepEqual(payloads[0], small);
  const fus = payloads.slice(1);
  t.is(fus[0]![1]! & 0x80, 0x80);
  t.is(fus[fus.length - 1]![1]! & 0x40, 0x40);
  const rebuilt = Buffer.concat([Buffer.from([(fus[0]![0]! & 0xe0) | (fus[0]![1]! & 0x1f)]), ...fus.map((f) => f.subarray(2))]);
  t.deepEqual(rebuilt, big);
  // Access units split at a new slice with first_mb_in_slice 0, and at parameter sets after a slice.
  const sc = Buffer.from([0, 0, 0, 1]);
  const stream = Buffer.concat([sc, Buffer.from([0x67, 0x42]), sc, Buffer.from([0x68, 0xce]), sc, Buffer.from([0x65, 0x88]), sc, Buffer.from([0x41, 0x9a]), sc, Buffer.from([0x41, 0x9b])]);
  t.deepEqual(accessUnits(stream).map((au) => au.length), [3, 1, 1]);
  t.is(opusSamples(Buffer.from([0xfc])), 960); // config 31 (CELT FB 20 ms), one frame
});

test('the WHIP clip loops with RTP timestamps that keep increasing', async (t) => {
  const media = await ensureWhipMedia();
  const clip = buildRtpClip(readFileSync(media.h264), readFileSync(media.opus), media.fps);
  t.is(clip.videoFrames, 480);
  t.true(clip.audioFrames >= 790);
  t.true(clip.bitsPerSecond > 0.8e6 && clip.bitsPerSecond < 1.3e6, `${clip.bitsPerSecond}`);
  t.true(clip.video[0]!.keyframeStart);
  t.true(splitAnnexB(readFileSync(media.h264)).length > 480);
  const feed = new RtpFeed(clip, { maxMs: 1000 });
  const tick = feed.take(clip.periodMs * 2.5);
  for (const kind of ['video', 'audio'] as const) {
    const ts = tick[kind].map((p) => p.readUInt32BE(4));
    const seq = tick[kind].map((p) => p.readUInt16BE(2));
    for (let i = 1; i < ts.length; i++) {
      if (ts[i]! < ts[i - 1]!) return t.fail(`${kind} timestamp went back at ${i}: ${ts[i - 1]} -> ${ts[i]}`);
      if (seq[i] !== ((seq[i - 1]! + 1) & 0xffff)) return t.fail(`${kind} sequence broke at ${i}`);
    }
  }
  t.is(tick.keyframeAt, 0);
});

test('WHIP publishers negotiate (201 + Location), join at a keyframe, send H.264 and Opus, and DELETE on close', async (t) => {
  // The protocol alone, against a minimal werift answerer that records what it receives per session.
  const answerer = await startWhipAnswerer();
  t.teardown(() => answerer.close());
  const media = await ensureWhipMedia();
  const clip = buildRtpClip(readFileSync(media.h264), readFileSync(media.opus), media.fps);
  const feed = new RtpFeed(clip, { maxMs: 30_000 });
  t.teardown(() => feed.stop());
  feed.start();
  const pubs = new WhipPublishers({ urlTemplate: answerer.url, names: ['w1', 'w2'], feed, rampMs: 200 });
  t.teardown(() => pubs.close());
  await pubs.start();
  t.deepEqual(
    pubs.stats().map((s) => s.error),
    [undefined, undefined],
  );
  await waitFor(() => [...answerer.sessions.values()].every((r) => r.idrs >= 2 && r.videoFrames >= 60), { timeoutMs: 15_000, what: 'two keyframes on each session' });
  await pubs.close();
  t.is(answerer.sessions.size, 2);
  for (const r of answerer.sessions.values()) {
    t.is(r.firstNalType, 7, 'the first frame a receiver sees starts with SPS (an IDR access unit)');
    t.true(r.audioPackets > 50);
    t.true(r.deleted, 'the session was ended with DELETE');
  }
  t.true(pubs.stats().every((s) => s.state === 'closed' && s.packetsSent > 0));
});

test('a WHIP publisher reports a refused offer', async (t) => {
  const answerer = await startWhipAnswerer();
  t.teardown(() => answerer.close());
  const media = await ensureWhipMedia();
  const feed = new RtpFeed(buildRtpClip(readFileSync(media.h264), readFileSync(media.opus), media.fps), { maxMs: 5000 });
  const pubs = new WhipPublishers({ urlTemplate: answerer.url.replace('/whip/live/', '/nope/'), names: ['x'], feed, rampMs: 0 });
  await pubs.start();
  t.is(pubs.counts().failed, 1);
  t.regex(pubs.stats()[0]!.error ?? '', /answered 404/);
  await pubs.close();
});

test('WHIP publishers publish to the gateway: H.264 and Opus frames arrive, HLS is made, DELETE ends the streams', async (t) => {
  const gw = await startTestGateway({ webrtc: { ice: { udp4: '127.0.0.1', additionalHostAddresses: ['127.0.0.1'] } } });
  t.teardown(() => gw.close());
  const media = await ensureWhipMedia();
  const clip = buildRtpClip(readFileSync(media.h264), readFileSync(media.opus), media.fps);
  const feed = new RtpFeed(clip, { maxMs: 30_000 });
  t.teardown(() => feed.stop());
  feed.start();
  const pubs = new WhipPublishers({ urlTemplate: gw.httpUrl('/whip/live/{name}'), names: ['g1', 'g2'], feed, rampMs: 200 });
  t.teardown(() => pubs.close());
  await pubs.start();
  t.deepEqual(
    pubs.stats().map((s) => s.error),
    [undefined, undefined],
  );
  type Api = { streams: Array<{ name: string; protocol: string; tracks: Array<{ codec: string; width?: number; frames: number }> }> };
  const list = await waitFor(
    async () => {
      const body = (await (await fetch(gw.httpUrl('/api/v1/streams'))).json()) as Api;
      const ok = ['g1', 'g2'].every((n) => {
        const s = body.streams.find((x) => x.name === n);
        return (s?.tracks.find((tr) => tr.codec === 'h264')?.frames ?? 0) >= 60 && (s?.tracks.find((tr) => tr.codec === 'opus')?.frames ?? 0) >= 100;
      });
      return ok ? body.streams : undefined;
    },
    { timeoutMs: 15_000, what: 'two seconds of H.264 and Opus on both streams' },
  );
  t.true(list.every((s) => s.protocol === 'webrtc'));
  t.is(list.find((s) => s.name === 'g1')?.tracks.find((tr) => tr.codec === 'h264')?.width, 1280);
  const playlist = await waitFor(async () => {
    const r = await fetch(gw.httpUrl('/hls/live/g1/index.m3u8'));
    const text = await r.text();
    return r.status === 200 && text.includes('#EXTINF') ? text : undefined;
  }, { timeoutMs: 15_000, what: 'an HLS segment of a WHIP stream' });
  t.regex(playlist, /#EXTINF:/);
  await pubs.close();
  await waitFor(async () => ((await (await fetch(gw.httpUrl('/api/v1/streams'))).json()) as Api).streams.length === 0, { timeoutMs: 5000, what: 'the streams to end' });
  t.pass();
});
