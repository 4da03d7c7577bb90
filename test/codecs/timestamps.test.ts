import test from 'ava';
import { CodecError } from '../../codecs/errors.ts';
import { StreamClock, Unwrapper, rtmpMsTo90k, type Stamped } from '../../codecs/timestamps.ts';
import { prng } from '../helpers/prng.ts';

const HOUR = 3600 * 90_000;
const VIDEO = 0;
const AUDIO = 1;

test('rtmpMsTo90k', (t) => {
  t.is(rtmpMsTo90k(0), 0);
  t.is(rtmpMsTo90k(1), 90);
  t.is(rtmpMsTo90k(1000), 90_000);
  t.is(rtmpMsTo90k(2 ** 32 - 1), (2 ** 32 - 1) * 90);
});

test('Unwrapper follows the RTMP 32-bit wrap forwards and backwards', (t) => {
  const u = new Unwrapper(32);
  t.is(u.unwrap(2 ** 32 - 20), 2 ** 32 - 20);
  t.is(u.unwrap(2 ** 32 - 1), 2 ** 32 - 1);
  t.is(u.unwrap(0), 2 ** 32);
  t.is(u.unwrap(13), 2 ** 32 + 13);
  t.is(u.unwrap(2 ** 32 - 3), 2 ** 32 - 3); // a late sample from before the wrap
  t.is(u.unwrap(40), 2 ** 32 + 40);

  const back = new Unwrapper(32);
  t.is(back.unwrap(5), 5);
  t.is(back.unwrap(2 ** 32 - 5), -5);
  t.is(back.unwrap(2 ** 32 - 100), -100);
  t.is(back.unwrap(1), 1);
});

test('Unwrapper counts many wraps and handles 33-bit MPEG-TS', (t) => {
  const u = new Unwrapper(32);
  let expected = 0;
  u.unwrap(0);
  for (let i = 0; i < 20; i++) {
    expected += 2 ** 30;
    t.is(u.unwrap(expected % 2 ** 32), expected);
  }
  t.is(expected, 5 * 2 ** 32);

  const ts = new Unwrapper(33);
  t.is(ts.unwrap(2 ** 33 - 3000), 2 ** 33 - 3000);
  t.is(ts.unwrap(0), 2 ** 33);
  t.is(ts.unwrap(2 ** 32 - 90_000), 2 ** 33 + 2 ** 32 - 90_000);
  t.is(ts.unwrap(2 ** 32 + 90_000), 2 ** 33 + 2 ** 32 + 90_000); // 2^32 is not a wrap point on a 33-bit clock
  t.throws(() => ts.unwrap(NaN), { instanceOf: CodecError });
  t.throws(() => new Unwrapper(0), { instanceOf: RangeError });
});

test('RTMP ms across the 2^32 wrap give a continuous 90 kHz timeline', (t) => {
  const u = new Unwrapper(32);
  const clock = new StreamClock();
  const out: Stamped[] = [];
  for (let i = 0; i < 10; i++) {
    const ms = (2 ** 32 - 100 + i * 40) % 2 ** 32;
    const dts = rtmpMsTo90k(u.unwrap(ms));
    out.push(clock.stamp(VIDEO, dts, dts + 3600));
  }
  t.deepEqual(
    out.map((s) => s.dts),
    Array.from({ length: 10 }, (_, i) => i * 3600),
  );
  t.true(out.every((s) => s.pts === s.dts + 3600 && !s.discontinuity));
});

test('the first sample of the stream starts at 0, whatever the origin; PTS offsets are kept', (t) => {
  const clock = new StreamClock();
  const base = 123_456_789;
  t.deepEqual(clock.stamp(VIDEO, base, base + 7200), { dts: 0, pts: 7200, discontinuity: false });
  t.deepEqual(clock.stamp(VIDEO, base + 3000, base + 15_000), { dts: 3000, pts: 15_000, discontinuity: false });
  t.deepEqual(clock.stamp(AUDIO, base + 1000, base + 1000), { dts: 1000, pts: 1000, discontinuity: false });

  const negative = new StreamClock();
  t.is(negative.stamp(VIDEO, -5 * HOUR, -5 * HOUR).dts, 0);
  t.is(negative.stamp(VIDEO, -5 * HOUR + 3000, -5 * HOUR + 3000).dts, 3000);
});

test('repeated or decreasing DTS is nudged to last+1, and PTS is raised to DTS', (t) => {
  const clock = new StreamClock();
  t.is(clock.stamp(VIDEO, 0, 0).dts, 0);
  t.is(clock.stamp(VIDEO, 3000, 3000).dts, 3000);
  t.deepEqual(clock.stamp(VIDEO, 3000, 3000), { dts: 3001, pts: 3001, discontinuity: false });
  t.deepEqual(clock.stamp(VIDEO, 2000, 9000), { dts: 3002, pts: 9000, discontinuity: false });
  t.deepEqual(clock.stamp(VIDEO, 6000, 5000), { dts: 6000, pts: 6000, discontinuity: false });
  // A forward gap under maxJump passes through untouched.
  t.deepEqual(clock.stamp(VIDEO, 6000 + 5 * 90_000, 6000 + 5 * 90_000), { dts: 456_000, pts: 456_000, discontinuity: false });
});

function run(clock: StreamClock, track: number, from: number, step: number, n: number, cts = 0): Stamped[] {
  return Array.from({ length: n }, (_, i) => clock.stamp(track, from + i * step, from + i * step + cts));
}

for (const [name, jump] of [['back', -HOUR], ['forward', HOUR]] as const) {
  test(`a jump ${name} by an hour continues monotonic, with one discontinuity`, (t) => {
    const clock = new StreamClock();
    const before = run(clock, VIDEO, 50 * HOUR, 3000, 10, 6000);
    const after = run(clock, VIDEO, 50 * HOUR + 10 * 3000 + jump, 3000, 10, 6000);
    t.is(before.at(-1)?.dts, 27_000);
    // Continues from the last DTS plus the frame duration, as if nothing happened.
    t.deepEqual(
      after.map((s) => s.dts),
      Array.from({ length: 10 }, (_, i) => 30_000 + i * 3000),
    );
    t.true(after.every((s) => s.pts === s.dts + 6000));
    t.deepEqual(
      [...before, ...after].map((s) => s.discontinuity),
      [...Array<boolean>(10).fill(false), true, ...Array<boolean>(9).fill(false)],
    );
  });
}

/** Interleaves video (30 fps) and audio (AAC at 48 kHz: 1920 ticks) of one publisher clock from `t0`. */
function av(clock: StreamClock, t0: number, ms: number): { video: Stamped[]; audio: Stamped[]; vin: number[]; ain: number[] } {
  const r = { video: [] as Stamped[], audio: [] as Stamped[], vin: [] as number[], ain: [] as number[] };
  const end = t0 + ms * 90;
  let v = t0;
  let a = t0;
  while (v < end || a < end) {
    if (v <= a) {
      r.vin.push(v);
      r.video.push(clock.stamp(VIDEO, v, v + 6000));
      v += 3000;
    } else {
      r.ain.push(a);
      r.audio.push(clock.stamp(AUDIO, a, a));
      a += 1920;
    }
  }
  return r;
}

for (const [name, jump] of [['back', -HOUR], ['forward', HOUR]] as const) {
  test(`A/V alignment is kept across a publisher clock jump ${name}`, (t) => {
    const clock = new StreamClock();
    const t0 = 7 * HOUR;
    const first = av(clock, t0, 2000);
    const t1 = t0 + 180_000 + jump; // the publisher's clock jumps at 2 s
    const second = av(clock, t1, 2000);

    // Exactly one discontinuity: the first sample after the jump (video, which comes first in time).
    t.deepEqual([...first.video, ...first.audio].filter((s) => s.discontinuity), []);
    t.true(second.video[0]?.discontinuity);
    t.deepEqual([...second.video.slice(1), ...second.audio].filter((s) => s.discontinuity), []);

    // After the jump, audio and video keep the relation they have in the input.
    const shift = (second.video[0]?.dts ?? NaN) - t1;
    second.video.forEach((s, i) => t.is(s.dts, (second.vin[i] ?? NaN) + shift));
    second.audio.forEach((s, i) => t.is(s.dts, (second.ain[i] ?? NaN) + shift));
    // And the timeline continues where it was: the video's last DTS plus one frame.
    t.is(second.video[0]?.dts, (first.video.at(-1)?.dts ?? NaN) + 3000);
    monotonic(t, [...first.video, ...second.video]);
    monotonic(t, [...first.audio, ...second.audio]);
  });
}

function monotonic(t: import('ava').ExecutionContext, samples: Stamped[]) {
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1];
    const b = samples[i];
    if (!a || !b || b.dts <= a.dts) t.fail(`DTS not increasing at ${i}: ${a?.dts} -> ${b?.dts}`);
  }
  t.true(samples.every((s) => s.dts >= 0 && s.pts >= s.dts));
}

test('audio still on the old clock after video jumped stays continuous, then realigns', (t) => {
  const clock = new StreamClock();
  run(clock, VIDEO, HOUR, 3000, 10);
  run(clock, AUDIO, HOUR, 1920, 15);
  const v = clock.stamp(VIDEO, 30_000, 30_000); // video jumps back to ~0
  t.deepEqual(v, { dts: 30_000, pts: 30_000, discontinuity: true });
  // Two old-clock audio samples were still in flight: they continue the audio, once flagged.
  const late = [clock.stamp(AUDIO, HOUR + 15 * 1920, HOUR + 15 * 1920), clock.stamp(AUDIO, HOUR + 16 * 1920, HOUR + 16 * 1920)];
  t.deepEqual(late, [
    { dts: 15 * 1920, pts: 15 * 1920, discontinuity: true },
    { dts: 16 * 1920, pts: 16 * 1920, discontinuity: false },
  ]);
  // Then audio arrives on the new clock and lines up with the video exactly, without another rebase.
  const a = clock.stamp(AUDIO, 33_000, 33_000);
  t.deepEqual(a, { dts: 33_000, pts: 33_000, discontinuity: false });
  t.deepEqual(clock.stamp(VIDEO, 33_000, 33_000), { dts: 33_000, pts: 33_000, discontinuity: false });
});

test('a track silent for longer than maxJump resumes aligned, without rebasing the stream', (t) => {
  const clock = new StreamClock();
  run(clock, AUDIO, 0, 1920, 5);
  const video = run(clock, VIDEO, 0, 3000, 600); // 20 s of video, no audio after the first 100 ms
  const audio = clock.stamp(AUDIO, 600 * 3000, 600 * 3000);
  t.deepEqual(audio, { dts: 1_800_000, pts: 1_800_000, discontinuity: false });
  t.deepEqual(clock.stamp(VIDEO, 600 * 3000, 600 * 3000), { dts: 1_800_000, pts: 1_800_000, discontinuity: false });
  t.false(video.some((s) => s.discontinuity));
});

test('a track whose clock disagrees with the stream joins where the stream is and keeps its own pace', (t) => {
  const clock = new StreamClock();
  run(clock, VIDEO, 0, 3000, 100);
  const audio = run(clock, AUDIO, 40 * HOUR, 1920, 50);
  t.is(audio[0]?.dts, 99 * 3000);
  t.deepEqual(
    audio.map((s) => s.dts),
    Array.from({ length: 50 }, (_, i) => 99 * 3000 + i * 1920),
  );
  t.false(audio.some((s) => s.discontinuity));
  const video = run(clock, VIDEO, 100 * 3000, 3000, 10);
  t.false(video.some((s) => s.discontinuity));
  t.is(video[0]?.dts, 300_000);
});

test('a second track slightly earlier than the first never goes negative', (t) => {
  const clock = new StreamClock();
  t.is(clock.stamp(VIDEO, 3000, 3000).dts, 0); // the stream's origin
  const audio = run(clock, AUDIO, 0, 1920, 4);
  t.deepEqual(
    audio.map((s) => s.dts),
    [0, 1, 840, 2760],
  );
});

test('maxJump is configurable', (t) => {
  const clock = new StreamClock({ maxJump90k: 90_000 });
  run(clock, VIDEO, 0, 3000, 3);
  t.deepEqual(clock.stamp(VIDEO, 6000 + 2 * 90_000, 6000 + 2 * 90_000), { dts: 9000, pts: 9000, discontinuity: true });
  t.deepEqual(clock.stamp(VIDEO, 9000 + 2 * 90_000, 9000 + 2 * 90_000), { dts: 12_000, pts: 12_000, discontinuity: false });
  t.throws(() => new StreamClock({ maxJump90k: 0 }), { instanceOf: RangeError });
});

test('non-finite input is a CodecError', (t) => {
  const clock = new StreamClock();
  t.throws(() => clock.stamp(VIDEO, NaN, 0), { instanceOf: CodecError });
  t.throws(() => clock.stamp(VIDEO, 0, Infinity), { instanceOf: CodecError });
  t.is(clock.stamp(VIDEO, 5, 5).dts, 0, 'a rejected sample leaves no state behind');
});

test('random clocks with jumps, repeats and reordering never break the invariants', (t) => {
  const rand = prng(42);

  for (let round = 0; round < 50; round++) {
    const clock = new StreamClock();
    const tracks = 1 + Math.floor(rand() * 3);
    const clocks = Array.from({ length: tracks }, () => (rand() - 0.5) * 100 * HOUR);
    const last = new Map<number, number>();
    for (let i = 0; i < 400; i++) {
      const track = Math.floor(rand() * tracks);
      const r = rand();
      let c = clocks[track] ?? 0;
      if (r < 0.02) c += (rand() - 0.5) * 4 * HOUR; // jump
      else if (r < 0.1) c -= rand() * 20_000; // reorder
      else if (r > 0.9) c += 0; // repeat
      else c += rand() * 4000;
      if (rand() < 0.01) for (let k = 0; k < tracks; k++) clocks[k] = (clocks[k] ?? 0) + 2 * HOUR; // shared jump
      else clocks[track] = c;
      const s = clock.stamp(track, c, c + (rand() < 0.3 ? (rand() - 0.3) * 20_000 : 0));
      const prev = last.get(track);
      if (!Number.isInteger(s.dts) || !Number.isInteger(s.pts) || s.dts < 0 || s.pts < s.dts || (prev !== undefined && s.dts <= prev)) {
        t.fail(`round ${round} sample ${i}: ${JSON.stringify(s)} after ${prev}`);
        return;
      }
      last.set(track, s.dts);
    }
  }
  t.pass();
});
