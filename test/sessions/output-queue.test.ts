import test from 'ava';
import { OutputQueue, type StreamEvent } from '../../sessions/output-queue.ts';
import { BufferPool } from '../../sessions/pool.ts';
import type { Frame } from '../../sessions/frame.ts';
import { AUDIO, VIDEO, audio, video } from './frames.ts';

function label(ev: StreamEvent): string {
  if (ev.type === 'metadata') return 'meta';
  if (ev.type === 'track') return `track:${ev.track.kind}`;
  const f = ev.frame;
  return `${f.kind === 'video' ? 'V' : 'A'}${f.dts}${f.keyframe && f.kind === 'video' ? 'k' : ''}`;
}

/** Takes everything queued, as labels, releasing the frames as a consumer would. */
function drain(q: OutputQueue): string[] {
  const out: string[] = [];
  for (let ev = q.shift(); ev; ev = q.shift()) {
    out.push(label(ev));
    if (ev.type === 'frame') ev.frame.data.release();
  }
  return out;
}

/** Pushes a frame as the Stream does: the queue retains, the pusher keeps and drops its own reference. */
function push(q: OutputQueue, f: Frame): void {
  q.push({ type: 'frame', frame: f });
  f.data.release();
}

function setup(maxFrames: number, maxBytes = 1 << 20) {
  const pool = new BufferPool({ maxBytes: 1 << 24 });
  const drops: number[] = [];
  const q = new OutputQueue({ maxFrames, maxBytes, onDrop: (n) => drops.push(n) });
  const dropSum = () => drops.reduce((a, b) => a + b, 0);
  return { pool, q, drops, dropSum };
}

test('keeps order and retains each queued frame', (t) => {
  const { pool, q } = setup(100);
  let readable = 0;
  q.onReadable = () => readable++;
  q.push({ type: 'metadata', metadata: { width: 1280 } });
  t.is(readable, 1, 'empty -> non-empty signals readable');
  q.push({ type: 'track', track: VIDEO });
  q.push({ type: 'track', track: AUDIO });
  const f = video(pool, 0, true, 300);
  q.push({ type: 'frame', frame: f });
  t.is(f.data.refs, 2, 'the queue took its own reference');
  f.data.release();
  push(q, audio(pool, 10, 40));
  push(q, video(pool, 33, false, 200));
  t.is(readable, 1, 'no readable signal while already non-empty');
  t.is(q.length, 6);
  t.is(q.bytes, 540);
  t.deepEqual(drain(q), ['meta', 'track:video', 'track:audio', 'V0k', 'A10', 'V33']);
  t.is(q.bytes, 0);
  t.is(q.length, 0);
  t.is(q.dropped, 0);
  t.is(pool.bytesInUse, 0);
  push(q, audio(pool, 20));
  t.is(readable, 2);
  drain(q);
  t.is(pool.buffersInUse, 0);
});

test('overflow by frame count drops everything queued and skips to the next video keyframe', (t) => {
  const { pool, q, dropSum } = setup(4);
  q.push({ type: 'track', track: VIDEO });
  push(q, video(pool, 0, true));
  push(q, video(pool, 1, false));
  push(q, audio(pool, 2));
  push(q, video(pool, 3, false));
  t.is(q.length, 5);
  t.is(q.dropped, 0);
  push(q, audio(pool, 4)); // the fifth frame overflows
  t.is(q.overflows, 1);
  t.is(q.dropped, 5, 'four queued frames and the audio frame that overflowed');
  push(q, video(pool, 5, false));
  push(q, audio(pool, 6)); // audio while waiting for a video keyframe is dropped too
  t.is(q.dropped, 7);
  t.is(pool.buffersInUse, 0, 'dropped frames were released');
  push(q, video(pool, 7, true));
  push(q, audio(pool, 8));
  push(q, video(pool, 9, false));
  t.is(q.dropped, 7);
  t.is(dropSum(), 7, 'onDrop was told of every dropped frame');
  t.deepEqual(drain(q), ['track:video', 'V7k', 'A8', 'V9'], 'non-frame events survive; frames resume at the keyframe');
  t.is(pool.bytesInUse, 0);
});

test('overflow on a keyframe keeps the keyframe', (t) => {
  const { pool, q, dropSum } = setup(3);
  push(q, video(pool, 0, true));
  push(q, video(pool, 1, false));
  push(q, video(pool, 2, false));
  push(q, video(pool, 3, true));
  t.is(q.overflows, 1);
  t.is(q.dropped, 3);
  t.is(dropSum(), 3);
  push(q, video(pool, 4, false));
  t.deepEqual(drain(q), ['V3k', 'V4']);
  t.is(pool.bytesInUse, 0);
});

test('overflow by bytes', (t) => {
  const { pool, q } = setup(1000, 1000);
  push(q, video(pool, 0, true, 300));
  push(q, video(pool, 1, false, 300));
  push(q, video(pool, 2, false, 400));
  t.is(q.bytes, 1000, 'exactly at the byte limit fits');
  t.is(q.dropped, 0);
  push(q, audio(pool, 3, 1));
  t.is(q.overflows, 1);
  t.is(q.dropped, 4);
  t.is(q.bytes, 0);
  push(q, video(pool, 4, false, 10));
  t.is(q.dropped, 5);
  push(q, video(pool, 5, true, 900));
  push(q, video(pool, 6, false, 100));
  t.is(q.bytes, 1000);
  t.deepEqual(drain(q), ['V5k', 'V6']);
  t.is(pool.bytesInUse, 0);
});

test('an audio-only stream resumes at once after an overflow', (t) => {
  const { pool, q, dropSum } = setup(2);
  q.push({ type: 'track', track: AUDIO });
  push(q, audio(pool, 0));
  push(q, audio(pool, 1));
  push(q, audio(pool, 2));
  t.is(q.overflows, 1);
  t.is(q.dropped, 2, 'the queued frames go; the new one is kept');
  push(q, audio(pool, 3));
  t.is(q.dropped, 2);
  t.is(dropSum(), 2);
  t.deepEqual(drain(q), ['track:audio', 'A2', 'A3']);
  t.is(pool.bytesInUse, 0);
});

test('end() lets the consumer drain, then reports the reason', (t) => {
  const { pool, q } = setup(100);
  let readable = 0;
  q.onReadable = () => readable++;
  push(q, video(pool, 0, true));
  push(q, audio(pool, 1));
  q.end('publisher left');
  t.is(readable, 2, 'end signals readable');
  t.true(q.closed);
  t.is(q.ended, undefined, 'not ended until drained');
  const late = video(pool, 2, false);
  q.push({ type: 'frame', frame: late });
  t.is(late.data.refs, 1, 'nothing is queued after end');
  late.data.release();
  q.end('again');
  t.is(readable, 2, 'end is idempotent');
  t.deepEqual(drain(q), ['V0k', 'A1']);
  t.is(q.ended, 'publisher left');
  t.is(pool.bytesInUse, 0);
});

test('dispose() releases everything still queued', (t) => {
  const { pool, q } = setup(100);
  q.push({ type: 'metadata', metadata: {} });
  for (let i = 0; i < 10; i++) push(q, i % 3 ? audio(pool, i, 500) : video(pool, i, i === 0, 1000));
  t.is(pool.buffersInUse, 10);
  q.dispose();
  t.is(pool.buffersInUse, 0);
  t.is(pool.bytesInUse, 0);
  t.is(q.length, 0);
  t.is(q.ended, 'disposed');
  const late = video(pool, 99, true);
  q.push({ type: 'frame', frame: late });
  t.is(late.data.refs, 1);
  late.data.release();
  t.is(pool.buffersInUse, 0);
});

test('a long-running queue compacts and keeps its accounting', (t) => {
  const { pool, q } = setup(5000);
  const seen: number[] = [];
  for (let i = 0; i < 5000; i++) {
    push(q, audio(pool, i, 8));
    if (i % 3 === 2) {
      const ev = q.shift();
      if (ev?.type === 'frame') {
        seen.push(ev.frame.dts);
        ev.frame.data.release();
      }
    }
  }
  for (let ev = q.shift(); ev; ev = q.shift()) {
    if (ev.type === 'frame') {
      seen.push(ev.frame.dts);
      ev.frame.data.release();
    }
  }
  t.is(seen.length, 5000);
  t.true(seen.every((d, i) => d === i), 'order kept across compaction');
  t.is(q.bytes, 0);
  t.is(pool.bytesInUse, 0);
});
