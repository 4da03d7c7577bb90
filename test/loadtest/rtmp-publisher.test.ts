import test from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChunkReader, MessageType, encodeMessage, type RtmpMessage } from '../../codecs/rtmp/chunks.ts';
import { setChunkSize } from '../../codecs/rtmp/messages.ts';
import { defaultCacheDir, ensureRtmpMedia, type MediaSpec } from '../../loadtest/media.ts';
import { FlvClip, LoopSchedule, RtmpFeed, encodeDue } from '../../loadtest/replay.ts';
import { RtmpPlayers } from '../../loadtest/rtmp-players.ts';
import { RtmpPublishers } from '../../loadtest/rtmp-publishers.ts';
import { launchNginxRtmp } from '../../loadtest/servers.ts';
import { countPackets } from '../helpers/ffmpeg.ts';
import { startTestGateway } from '../helpers/gateway.ts';
import { run } from '../helpers/process.ts';
import { waitFor } from '../helpers/wait.ts';

/** A small clip so the tests loop it several times: 2 s, keyframe every second. */
const SMALL: MediaSpec = { width: 320, height: 240, fps: 30, keyframeSeconds: 1, seconds: 2, videoKbps: 300, audioKbps: 64 };

async function smallClip(): Promise<FlvClip> {
  return new FlvClip(readFileSync(await ensureRtmpMedia(defaultCacheDir(), SMALL)));
}

/** Decodes what a publisher wrote (chunked at the feed's chunk size) back into messages. */
function decoder(chunkSize: number): (bytes: Buffer) => RtmpMessage[] {
  const r = new ChunkReader({ maxChunkSize: 1 << 20, maxMessageSize: 1 << 24 });
  r.push(encodeMessage(2, setChunkSize(chunkSize), 128));
  return (bytes) => r.push(bytes);
}

test('the clip loops with timestamps that keep increasing on every track', async (t) => {
  const clip = await smallClip();
  t.is(clip.videoFrames, 60);
  t.true(clip.audioFrames >= 90);
  t.truthy(clip.videoConfig);
  t.truthy(clip.audioConfig);
  t.true(clip.tags[0]!.keyframe);
  const s = new LoopSchedule(clip);
  const due = s.take(clip.periodMs * 3.5);
  t.is(s.loops, 3);
  const last = new Map<number, number>();
  for (const d of due) {
    const prev = last.get(d.tag.type);
    if (prev !== undefined) t.true(d.timestamp > prev, `type ${d.tag.type}: ${d.timestamp} after ${prev}`);
    last.set(d.tag.type, d.timestamp);
  }
  t.true(last.get(9)! > clip.periodMs * 3);
  // Chunked once, the bytes decode back to the same messages with the looped timestamps.
  const chunk = encodeDue(due, 1, 4096);
  const msgs = decoder(4096)(chunk.bytes);
  t.is(msgs.length, due.length);
  t.deepEqual(
    msgs.map((m) => m.timestamp),
    due.map((d) => d.timestamp),
  );
  t.true(msgs.every((m, i) => m.payload.equals(due[i]!.tag.body) && m.streamId === 1));
  t.is(chunk.keyframeAt, 0);
});

test('publisher bytes play back: nginx-rtmp records every frame sent, in both codecs, across loops', async (t) => {
  const clip = await smallClip();
  const rec = mkdtempSync(join(tmpdir(), 'lt-rec-'));
  t.teardown(() => rmSync(rec, { recursive: true, force: true }));
  const nginx = await launchNginxRtmp({ timeoutMs: 60_000, recordDir: rec, hls: false });
  t.teardown(() => nginx.stop());
  const feed = new RtmpFeed(clip, { maxMs: 30_000, tickMs: 40 });
  t.teardown(() => feed.stop());
  const sent = { video: 0, audio: 0, lastVideoTs: 0 };
  const decode = decoder(feed.chunkSize);
  const pubs = new RtmpPublishers({
    url: nginx.rtmpUrl,
    names: ['rec'],
    feed,
    rampMs: 0,
    tap: (_name, bytes) => {
      for (const m of decode(bytes)) {
        // Sequence headers are decoder config, not frames.
        if (m.type === MessageType.Video && m.payload[1] === 1) {
          sent.video++;
          sent.lastVideoTs = m.timestamp;
        }
        if (m.type === MessageType.Audio && m.payload[1] === 1) sent.audio++;
      }
    },
  });
  feed.start();
  await pubs.start();
  t.is(pubs.counts().failed, 0, JSON.stringify(pubs.stats()));
  // Two and a half loops of the 2 s clip.
  await waitFor(() => sent.lastVideoTs > clip.periodMs * 2.5, { timeoutMs: 15_000, what: 'two loops' });
  feed.stop();
  await new Promise((r) => setTimeout(r, 300));
  await pubs.close();
  const file = join(rec, 'rec.flv');
  await waitFor(() => existsSync(file), { timeoutMs: 5000, what: 'the recording' });
  await new Promise((r) => setTimeout(r, 300));
  const got = await countPackets(file);
  t.like(got.find((s) => s.codec === 'h264'), { width: 320, height: 240, packets: sent.video });
  t.is(got.find((s) => s.codec === 'aac')?.packets, sent.audio);
  const decoded = await run('ffmpeg', ['-v', 'error', '-i', file, '-f', 'null', '-'], { timeoutMs: 30_000 });
  t.is(decoded.code, 0);
  t.is(decoded.stderr.trim(), '');
  // The recording's timestamps span the loops: no reset at the loop point.
  const dur = await run('ffprobe', ['-v', 'error', '-show_entries', 'format=duration', '-of', 'csv=p=0', file], { timeoutMs: 10_000 });
  t.true(Number(dur.stdout.trim()) > (clip.periodMs * 2) / 1000, `duration ${dur.stdout}`);
});

test('publisher bytes play back: the gateway ingests every frame of many publishers sharing one feed', async (t) => {
  const clip = await smallClip();
  const gw = await startTestGateway();
  t.teardown(() => gw.close());
  const feed = new RtmpFeed(clip, { maxMs: 30_000, tickMs: 40 });
  t.teardown(() => feed.stop());
  const names = ['a', 'b', 'c', 'd'];
  const sent = new Map(names.map((n) => [n, { video: 0, audio: 0, decode: decoder(feed.chunkSize) }]));
  const pubs = new RtmpPublishers({
    url: gw.rtmpUrl('live'),
    names,
    feed,
    rampMs: 300,
    tap: (name, bytes) => {
      const s = sent.get(name)!;
      for (const m of s.decode(bytes)) {
        if (m.type === MessageType.Video && m.payload[1] === 1) s.video++;
        if (m.type === MessageType.Audio && m.payload[1] === 1) s.audio++;
      }
    },
  });
  feed.start();
  await pubs.start();
  t.deepEqual(pubs.counts().failed, 0);
  await waitFor(() => feed.loops >= 2, { timeoutMs: 15_000, what: 'two loops' });
  feed.stop();
  type Api = { streams: Array<{ name: string; tracks: Array<{ codec: string; width?: number; height?: number; frames: number }> }> };
  const streams = await waitFor(
    async () => {
      const body = (await (await fetch(gw.httpUrl('/api/v1/streams'))).json()) as Api;
      const list = body.streams;
      const done = names.every((n) => {
        const s = list.find((x) => x.name === n);
        return s && s.tracks.find((tr) => tr.codec === 'h264')?.frames === sent.get(n)!.video;
      });
      return done ? list : undefined;
    },
    { timeoutMs: 5000, what: 'the gateway to count every frame sent' },
  );
  for (const n of names) {
    const s = streams.find((x) => x.name === n)!;
    t.like(s.tracks.find((tr) => tr.codec === 'h264'), { width: 320, height: 240, frames: sent.get(n)!.video });
    t.is(s.tracks.find((tr) => tr.codec === 'aac')?.frames, sent.get(n)!.audio);
  }
  await pubs.close();
});

test('RTMP players play what the publishers send: every frame, in order, at the clip rate', async (t) => {
  const clip = await smallClip();
  const nginx = await launchNginxRtmp({ timeoutMs: 60_000, hls: false });
  t.teardown(() => nginx.stop());
  const feed = new RtmpFeed(clip, { maxMs: 30_000, tickMs: 40 });
  t.teardown(() => feed.stop());
  const pubs = new RtmpPublishers({ url: nginx.rtmpUrl, names: ['p'], feed, rampMs: 0 });
  feed.start();
  await pubs.start();
  const players = new RtmpPlayers({ url: nginx.rtmpUrl, names: ['p', 'p', 'missing'], rampMs: 0, connectTimeoutMs: 3000 });
  await players.start();
  await new Promise((r) => setTimeout(r, 4000));
  const [a, b] = players.stats();
  await players.close();
  await pubs.close();
  for (const s of [a!, b!]) {
    t.is(s.state, 'playing');
    t.true(s.videoFrames >= 90, `${s.videoFrames} frames`);
    t.true(s.fps > 25 && s.fps < 35, `${s.fps} fps`);
    t.true(s.audioFrames > 100);
    t.is(s.stalls, 0);
    t.is(s.timestampRegressions, 0);
  }
});
