/** The engine-independent RTP-to-frames pipeline, fed synthetic RTP and sender reports. */
import test from 'ava';
import type { RtpPacket } from '../../codecs/rtp.ts';
import type { Frame, Track, VideoTrack } from '../../sessions/frame.ts';
import { RtpIngest, type RtpIngestOptions } from '../../gateway/webrtc/rtp-ingest.ts';
import { testPool, waitFor } from './helpers.ts';
import { nal, opusPacket, packetizeH264, PARAMS } from './rtp-fixtures.ts';

type Ev = { type: 'track'; track: Track } | { type: 'frame'; frame: Frame };

const VIDEO = { kind: 'video' as const, payloadType: 102, clockRate: 90000, channels: 1 };
const AUDIO = { kind: 'audio' as const, payloadType: 111, clockRate: 48000, channels: 1 };
const VSSRC = 0x1111;
const ASSRC = 0x2222;

function setup(media: RtpIngestOptions['media'], extra: Partial<RtpIngestOptions> = {}) {
  const pool = testPool();
  const events: Ev[] = [];
  const plis: number[] = [];
  let now = 1000;
  const ingest = new RtpIngest({
    pool,
    media,
    out: {
      track: (track) => events.push({ type: 'track', track }),
      frame: (frame) => events.push({ type: 'frame', frame }),
    },
    requestKeyframe: (ssrc) => plis.push(ssrc),
    now: () => now,
    startHoldMs: 60_000,
    ...extra,
  });
  const frames = (kind?: 'video' | 'audio') =>
    events.flatMap((e) => (e.type === 'frame' && (!kind || e.frame.kind === kind) ? [e.frame] : []));
  const release = () => frames().forEach((f) => f.data.release());
  return {
    pool,
    events,
    plis,
    ingest,
    frames,
    release,
    setNow: (ms: number) => {
      now = ms;
    },
  };
}

let vseq = 100;
/** Packets of one video access unit at RTP time `ts`. */
function videoAu(ts: number, opts: { idr?: boolean; params?: { sps: Uint8Array; pps: Uint8Array }; size?: number } = {}): RtpPacket[] {
  const nalus = [nal(opts.idr ? 5 : 1, opts.size ?? (opts.idr ? 4000 : 800))];
  if (opts.params) nalus.unshift(opts.params.sps, opts.params.pps);
  const ps = packetizeH264(nalus, { seq: vseq, ts, ssrc: VSSRC, pt: 102, mtu: 1200 });
  vseq = (vseq + ps.length) & 0xffff;
  return ps;
}

const audioPkt = (seq: number, ts: number): RtpPacket => ({
  payloadType: 111,
  sequenceNumber: seq & 0xffff,
  timestamp: ts >>> 0,
  ssrc: ASSRC,
  marker: false,
  payload: opusPacket(40, seq),
});

test('audio and video are aligned by sender reports: both start at the first video keyframe', (t) => {
  const env = setup([AUDIO, VIDEO]);
  const T0 = 3_900_000_000; // sender NTP seconds
  const rv0 = 0xfffff000; // the video clock wraps during the test
  const ra0 = 123_456;
  const p = PARAMS.baseline640x360;
  // Audio from T0 (20 ms packets), video from T0 + 100 ms (30 fps); interleaved by capture time.
  type Item = { at: number; kind: 'audio' | 'video'; packets: RtpPacket[] };
  const items: Item[] = [];
  for (let j = 0; j < 100; j++) items.push({ at: j * 0.02, kind: 'audio', packets: [audioPkt(j, ra0 + 960 * j)] });
  for (let k = 0; k < 60; k++) {
    const ts = (rv0 + 9000 + 3000 * k) >>> 0;
    items.push({ at: 0.1 + k / 30, kind: 'video', packets: videoAu(ts, k === 0 ? { idr: true, params: p } : {}) });
  }
  items.sort((a, b) => a.at - b.at);
  let srSent = false;
  for (const it of items) {
    env.setNow(1000 + it.at * 1000 + 5);
    for (const pk of it.packets) env.ingest.rtp(it.kind, pk);
    if (!srSent && it.at >= 0.5) {
      t.is(env.frames().length, 0, 'frames are held until both sender reports are in');
      env.ingest.senderReport('video', { ssrc: VSSRC, ntpSeconds: T0, rtpTimestamp: rv0 });
      t.is(env.frames().length, 0);
      env.ingest.senderReport('audio', { ssrc: ASSRC, ntpSeconds: T0, rtpTimestamp: ra0 });
      srSent = true;
    }
  }
  const v = env.frames('video');
  const a = env.frames('audio');
  t.is(v.length, 60);
  t.is(a.length, 95, 'five audio packets before the first video frame are trimmed');
  t.is(env.ingest.stats().trimmedFrames, 5);
  t.is(env.ingest.stats().sync, 'sender-reports');
  t.deepEqual(v.slice(0, 4).map((f) => f.dts), [0, 3000, 6000, 9000]);
  t.deepEqual(a.slice(0, 3).map((f) => f.dts), [0, 1800, 3600]);
  t.is(v[59]!.dts, 59 * 3000, 'across the 32-bit RTP wrap');
  t.true(v[0]!.keyframe);
  t.is(v[0]!.codec, 'h264');
  t.is(a[0]!.codec, 'opus');
  // Tracks come first, then frames interleaved by DTS.
  t.deepEqual(env.events.slice(0, 2).map((e) => e.type), ['track', 'track']);
  const dts = env.events.flatMap((e) => (e.type === 'frame' ? [e.frame.dts] : []));
  const firstAfterRelease = dts.slice(0, 40);
  t.deepEqual(firstAfterRelease, [...firstAfterRelease].sort((x, y) => x - y));
  const vt = env.events.find((e) => e.type === 'track' && e.track.kind === 'video') as { track: VideoTrack };
  t.is(`${vt.track.width}x${vt.track.height}`, '640x360');
  t.is(vt.track.codecString, 'avc1.42c01e');
  // The video frame data is AVCC: one 4-byte length and the IDR (SPS/PPS are in the config).
  const d = v[0]!.data.bytes;
  t.is(d.readUInt32BE(0), d.length - 4);
  t.is(d[4]! & 0x1f, 5);
  env.release();
  env.ingest.close();
  t.is(env.pool.bytesInUse, 0);
});

test('a new SPS with a new size becomes a new track config, in order before its keyframe', (t) => {
  const env = setup([VIDEO]);
  let ts = 1000;
  const push = (ps: RtpPacket[]) => ps.forEach((p) => env.ingest.rtp('video', p));
  push(videoAu(ts, { idr: true, params: PARAMS.baseline640x360 }));
  for (let i = 0; i < 5; i++) push(videoAu((ts += 3000)));
  push(videoAu((ts += 3000), { idr: true, params: PARAMS.baseline640x360 })); // same SPS again: no new config
  push(videoAu((ts += 3000), { idr: true, params: PARAMS.main1280x720 }));
  push(videoAu((ts += 3000)));
  const seq = env.events.map((e) => (e.type === 'track' ? `track ${(e.track as VideoTrack).width}x${(e.track as VideoTrack).height}` : e.frame.keyframe ? 'K' : 'P'));
  t.deepEqual(seq, ['track 640x360', 'K', 'P', 'P', 'P', 'P', 'P', 'K', 'track 1280x720', 'K', 'P']);
  t.is(env.ingest.stats().configChanges, 2);
  t.is(env.ingest.stats().sync, 'arrival');
  env.release();
  env.ingest.close();
  t.is(env.pool.bytesInUse, 0);
});

test('frames before the first parameter sets and keyframe are dropped, and a keyframe is requested', (t) => {
  const env = setup([VIDEO]);
  let ts = 0;
  for (let i = 0; i < 3; i++) videoAu((ts += 3000)).forEach((p) => env.ingest.rtp('video', p));
  t.is(env.frames().length, 0);
  t.deepEqual(env.plis, [VSSRC], 'one request (they are spaced by keyframeIntervalMs)');
  t.is(env.ingest.stats().droppedFrames, 3);
  videoAu((ts += 3000), { idr: true, params: PARAMS.baseline640x360 }).forEach((p) => env.ingest.rtp('video', p));
  t.is(env.frames().length, 1);
  t.is(env.frames()[0]!.dts, 0);
  env.release();
  env.ingest.close();
});

test('a lost packet drops its frame, is counted, and asks for a keyframe; reordering alone loses nothing', (t) => {
  const env = setup([VIDEO], { videoReorder: { capacity: 64, maxWaitMs: 100 }, keyframeIntervalMs: 1000 });
  let ts = 0;
  let now = 1000;
  const push = (ps: RtpPacket[]) =>
    ps.forEach((p) => {
      env.setNow((now += 1));
      env.ingest.rtp('video', p);
    });
  push(videoAu(ts, { idr: true, params: PARAMS.baseline640x360 }));
  // Reordered (swap two packets of a big frame): recovered.
  const swapped = videoAu((ts += 3000), { size: 5000 });
  [swapped[1], swapped[2]] = [swapped[2]!, swapped[1]!];
  push(swapped);
  t.is(env.frames().length, 2);
  // Lost: a middle packet of a big frame never comes; later packets wait 100 ms, then the frame is dropped.
  const broken = videoAu((ts += 3000), { size: 5000 });
  push([...broken.slice(0, 2), ...broken.slice(3)]);
  for (let i = 0; i < 5; i++) push(videoAu((ts += 3000)));
  t.is(env.frames().length, 2, 'waiting for the gap');
  env.setNow((now += 200));
  push(videoAu((ts += 3000)));
  t.is(env.ingest.stats().lostPackets, 1);
  t.is(env.ingest.stats().droppedFrames, 1);
  t.is(env.frames().length, 2 + 6, 'everything after the damaged frame');
  t.deepEqual(env.plis, [VSSRC]);
  env.release();
  env.ingest.close();
  t.is(env.pool.bytesInUse, 0);
});

test('without sender reports in time, arrival times stand in', async (t) => {
  const env = setup([AUDIO, VIDEO], { now: () => performance.now(), startHoldMs: 50 });
  videoAu(90_000, { idr: true, params: PARAMS.baseline640x360 }).forEach((p) => env.ingest.rtp('video', p));
  for (let j = 0; j < 3; j++) env.ingest.rtp('audio', audioPkt(j, 960 * j));
  t.is(env.frames().length, 0);
  await waitFor('hold timeout', 2000, () => env.frames().length === 4);
  t.is(env.ingest.stats().sync, 'arrival');
  const v = env.frames('video')[0]!;
  const a = env.frames('audio');
  t.true(Math.abs(v.dts - a[0]!.dts) <= 3600, `${v.dts} vs ${a[0]!.dts}`);
  env.release();
  env.ingest.close();
});

test('a new SSRC rebases the track with a discontinuity; DTS keeps increasing', (t) => {
  const env = setup([VIDEO]);
  let ts = 5000;
  const push = (ps: RtpPacket[], ssrc = VSSRC) => ps.forEach((p) => env.ingest.rtp('video', { ...p, ssrc }));
  push(videoAu(ts, { idr: true, params: PARAMS.baseline640x360 }));
  push(videoAu((ts += 3000)));
  vseq = 7; // the new source starts its own sequence
  push(videoAu(777_777, { idr: true, params: PARAMS.baseline640x360 }), 0x9999);
  push(videoAu(780_777), 0x9999);
  const f = env.frames();
  t.deepEqual(f.map((x) => x.dts), [0, 3000, 6000, 9000]);
  t.deepEqual(f.map((x) => x.discontinuity === true), [false, false, true, false]);
  env.release();
  env.ingest.close();
});

test('close() releases frames still held for alignment', (t) => {
  const env = setup([AUDIO, VIDEO]);
  videoAu(0, { idr: true, params: PARAMS.baseline640x360 }).forEach((p) => env.ingest.rtp('video', p));
  for (let j = 0; j < 10; j++) env.ingest.rtp('audio', audioPkt(j, 960 * j));
  t.true(env.pool.bytesInUse > 0);
  env.ingest.close();
  t.is(env.pool.bytesInUse, 0);
  env.ingest.rtp('audio', audioPkt(11, 960 * 11));
  t.is(env.pool.bytesInUse, 0, 'nothing after close');
});

test('malformed Opus packets and foreign payload types are dropped', (t) => {
  const env = setup([AUDIO]);
  env.ingest.rtp('audio', { ...audioPkt(1, 0), payload: Uint8Array.of((31 << 3) | 3, 0) });
  env.ingest.rtp('audio', { ...audioPkt(2, 960), payloadType: 63 });
  env.ingest.rtp('audio', audioPkt(3, 1920));
  t.is(env.frames().length, 1);
  t.is(env.ingest.stats().droppedFrames, 1);
  const track = env.events[0]!;
  t.is(track.type, 'track');
  t.is((track as { track: Track }).track.codecString, 'opus');
  env.release();
  env.ingest.close();
});
