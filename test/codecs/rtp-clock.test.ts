import test from 'ava';
import { anchorSeconds, ntpToSeconds, rtpTimestampDelta, RtpTimestampUnwrapper, TrackTimeline } from '../../codecs/rtp-clock.ts';

test('unwrapper follows 32-bit wraps forward and back', (t) => {
  const u = new RtpTimestampUnwrapper();
  t.is(u.unwrap(0xffffff00), 0xffffff00);
  t.is(u.unwrap(0x00000100), 0x100000100);
  t.is(u.unwrap(0xfffffff0), 0xfffffff0, 'a step back across the wrap');
  t.is(u.unwrap(0x10), 0x100000010);
  t.is(u.peek(0x20), 0x100000020);
  t.is(u.unwrap(0x30), 0x100000030);
  t.is(rtpTimestampDelta(0xffffffff, 0), 1);
  t.is(rtpTimestampDelta(0, 0xffffffff), -1);
});

test('ntpToSeconds reads 32.32 fixed point', (t) => {
  t.is(ntpToSeconds((3_900_000_000n << 32n) | 0x80000000n), 3_900_000_000.5);
  t.is(anchorSeconds({ rtp: 1000, seconds: 10 }, 1000 + 48000, 48000), 11);
});

test('timeline maps RTP time to 90 kHz from an anchor and an origin', (t) => {
  const audio = new TrackTimeline({ clockRate: 48000 });
  audio.anchor({ rtp: 960_000, seconds: 100.02 }, 100);
  t.deepEqual(audio.map(960_000), { dts: 1800, discontinuity: false });
  t.is(audio.map(960_960).dts, 3600);
  const video = new TrackTimeline({ clockRate: 90000 });
  video.anchor({ rtp: 5_000_000, seconds: 100 }, 100);
  t.is(video.map(5_000_000).dts, 0);
  t.is(video.map(5_003_000).dts, 3000);
});

test('timeline is strictly increasing and never negative', (t) => {
  const tl = new TrackTimeline({ clockRate: 90000 });
  tl.anchor({ rtp: 0, seconds: 0 }, 1); // origin after this track: first points would be negative
  t.is(tl.map(0).dts, 0);
  t.is(tl.map(3000).dts, 1);
  t.is(tl.map(93000).dts, 3000);
  t.is(tl.map(93000).dts, 3001, 'a repeated timestamp still moves forward');
  t.is(tl.map(90000).dts, 3002, 'a small step back is clamped');
});

test('timeline rebases a jump with a discontinuity, one typical step after the last point', (t) => {
  const tl = new TrackTimeline({ clockRate: 90000, maxForwardJump: 10 });
  tl.anchor({ rtp: 0, seconds: 0 }, 0);
  tl.map(0);
  tl.map(3000);
  t.deepEqual(tl.map(6000), { dts: 6000, discontinuity: false });
  t.deepEqual(tl.map(6000 + 90000 * 3600), { dts: 9000, discontinuity: true });
  t.deepEqual(tl.map(6000 + 90000 * 3600 + 3000), { dts: 12000, discontinuity: false });
  t.deepEqual(tl.map(5), { dts: 15000, discontinuity: true }, 'a jump back');
  tl.rebaseAt(777);
  t.deepEqual(tl.map(777), { dts: 18000, discontinuity: true }, 'a new SSRC');
});
