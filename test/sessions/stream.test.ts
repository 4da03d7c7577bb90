import test from 'ava';
import type { OutputQueue, StreamEvent } from '../../sessions/output-queue.ts';
import { BufferPool } from '../../sessions/pool.ts';
import { Stream, type PublisherInfo, type StreamLimits } from '../../sessions/stream.ts';
import { AUDIO, VIDEO, audio, video } from './frames.ts';

function label(ev: StreamEvent): string {
  if (ev.type === 'metadata') return `meta:${JSON.stringify(ev.metadata)}`;
  if (ev.type === 'track') return `track:${ev.track.kind}`;
  const f = ev.frame;
  return `${f.kind === 'video' ? 'V' : 'A'}${f.dts}${f.keyframe && f.kind === 'video' ? 'k' : ''}`;
}

function drain(q: OutputQueue): string[] {
  const out: string[] = [];
  for (let ev = q.shift(); ev; ev = q.shift()) {
    out.push(label(ev));
    if (ev.type === 'frame') ev.frame.data.release();
  }
  return out;
}

function publisher(): PublisherInfo & { closed: string[] } {
  const closed: string[] = [];
  return { protocol: 'rtmp', remoteAddress: '127.0.0.1:5000', closed, close: (r) => closed.push(r) };
}

function setup(limits: Partial<StreamLimits> = {}) {
  const pool = new BufferPool({ maxBytes: 1 << 24 });
  const stream = new Stream('live', 'cam', publisher(), {
    gopCacheBytes: limits.gopCacheBytes ?? 1 << 20,
    output: limits.output ?? { maxBytes: 1 << 20, maxFrames: 1000 },
  });
  return { pool, stream };
}

test('a late joiner gets metadata, tracks, then the GOP from the last keyframe, then live frames', (t) => {
  const { pool, stream } = setup();
  t.is(stream.key, 'live/cam');
  const early = stream.attach();
  stream.setMetadata({ w: 1280 });
  stream.setTrack(VIDEO);
  stream.setTrack(AUDIO);
  stream.push(audio(pool, 0)); // before any keyframe: not cached
  stream.push(video(pool, 1, true));
  stream.push(audio(pool, 2));
  stream.push(video(pool, 3, false));
  stream.push(video(pool, 4, true));
  stream.push(audio(pool, 5));
  stream.push(video(pool, 6, false));
  const late = stream.attach();
  t.is(stream.outputCount, 2);
  stream.push(video(pool, 7, false));
  t.deepEqual(drain(late), ['meta:{"w":1280}', 'track:video', 'track:audio', 'V4k', 'A5', 'V6', 'V7']);
  t.deepEqual(drain(early), ['meta:{"w":1280}', 'track:video', 'track:audio', 'A0', 'V1k', 'A2', 'V3', 'V4k', 'A5', 'V6', 'V7']);
  t.is(stream.framesIn, 8);
  t.deepEqual(stream.trackStats.get(VIDEO.id), { frames: 5, bytes: 500 });
  t.deepEqual(stream.trackStats.get(AUDIO.id), { frames: 3, bytes: 150 });
  t.is(pool.buffersInUse, 4, 'only the GOP cache (V4k A5 V6 V7) holds frames now');
  stream.end('done');
  t.is(pool.buffersInUse, 0);
  stream.detach(early);
  stream.detach(late);
  t.is(pool.bytesInUse, 0);
});

test('the GOP cache is bounded: an oversized GOP is not kept at all until the next keyframe', (t) => {
  const { pool, stream } = setup({ gopCacheBytes: 1000 });
  stream.setTrack(VIDEO);
  stream.push(video(pool, 0, true, 400));
  stream.push(video(pool, 1, false, 400));
  stream.push(video(pool, 2, false, 200));
  let q = stream.attach();
  t.deepEqual(drain(q), ['track:video', 'V0k', 'V1', 'V2'], 'exactly at the bound is kept');
  stream.detach(q);
  stream.push(video(pool, 3, false, 1));
  t.is(pool.buffersInUse, 0, 'past the bound the cache was emptied');
  stream.push(video(pool, 4, false, 1));
  q = stream.attach();
  t.deepEqual(drain(q), ['track:video'], 'a partial GOP is useless to a late joiner');
  stream.detach(q);
  stream.push(video(pool, 5, true, 10));
  stream.push(video(pool, 6, false, 10));
  q = stream.attach();
  t.deepEqual(drain(q), ['track:video', 'V5k', 'V6'], 'the next keyframe starts a new GOP');
  stream.detach(q);
  stream.push(video(pool, 7, true, 2000)); // a keyframe alone over the bound
  t.is(pool.buffersInUse, 0);
  q = stream.attach();
  t.deepEqual(drain(q), ['track:video']);
  stream.detach(q);
  stream.end('done');
  t.is(pool.bytesInUse, 0);
});

test('audio-only streams keep no GOP', (t) => {
  const { pool, stream } = setup();
  stream.setTrack(AUDIO);
  stream.push(audio(pool, 0));
  stream.push(audio(pool, 1));
  t.is(pool.buffersInUse, 0);
  const q = stream.attach();
  t.deepEqual(drain(q), ['track:audio']);
  stream.detach(q);
});

test('a new video track clears the GOP cache', (t) => {
  const { pool, stream } = setup();
  stream.setTrack(VIDEO);
  stream.setTrack(AUDIO);
  stream.push(video(pool, 0, true));
  stream.push(audio(pool, 1));
  t.is(pool.buffersInUse, 2);
  const live = stream.attach();
  stream.setTrack({ ...VIDEO, width: 1920, height: 1080 });
  t.is(pool.buffersInUse, 2, 'only the live output still holds the old frames');
  stream.push(video(pool, 2, false));
  t.is(pool.buffersInUse, 3, 'a non-keyframe after the new track is not cached');
  const q = stream.attach();
  t.deepEqual(drain(q), ['track:video', 'track:audio'], 'the old GOP is gone and V2 starts no new one');
  t.deepEqual(drain(live), ['track:video', 'track:audio', 'V0k', 'A1', 'track:video', 'V2'], 'live outputs see the new track in order');
  t.is((stream.tracks.get(VIDEO.id) as typeof VIDEO).width, 1920);
  t.is(pool.buffersInUse, 0);
  stream.detach(q);
  stream.detach(live);
});

test('push after end or on an unknown track releases the frame', (t) => {
  const { pool, stream } = setup();
  stream.setTrack(VIDEO);
  stream.push(audio(pool, 0)); // no audio track announced
  t.is(pool.buffersInUse, 0);
  t.is(stream.framesIn, 0);
  const ends: string[] = [];
  stream.on('end', (r) => ends.push(r));
  stream.end('bye');
  stream.end('again');
  t.deepEqual(ends, ['bye'], 'end is idempotent');
  t.is(stream.ended, 'bye');
  stream.push(video(pool, 1, true));
  t.is(pool.buffersInUse, 0);
  t.is(pool.bytesInUse, 0);
  t.is(stream.framesIn, 0);
  stream.setTrack(AUDIO);
  t.false(stream.tracks.has(AUDIO.id), 'no new tracks after end');
});

test('end() ends every output after what it already queued; late attach sees the end at once', (t) => {
  const { pool, stream } = setup();
  stream.setTrack(VIDEO);
  const a = stream.attach();
  const b = stream.attach();
  stream.push(video(pool, 0, true));
  stream.end('publisher left');
  t.true(a.closed);
  t.is(a.ended, undefined);
  t.deepEqual(drain(a), ['track:video', 'V0k']);
  t.is(a.ended, 'publisher left');
  t.deepEqual(drain(b), ['track:video', 'V0k']);
  t.is(b.ended, 'publisher left');
  const c = stream.attach();
  t.is(c.ended, 'publisher left');
  t.is(c.length, 0);
  stream.detach(a);
  stream.detach(b);
  stream.detach(c);
  t.is(pool.bytesInUse, 0);
});

test('pool returns to zero after end and detach, with frames still queued and some dropped', (t) => {
  const { pool, stream } = setup({ gopCacheBytes: 1 << 20, output: { maxBytes: 1 << 20, maxFrames: 20 } });
  stream.setTrack(VIDEO);
  stream.setTrack(AUDIO);
  const slow = stream.attach();
  const fast = stream.attach({ maxFrames: 1000 });
  for (let i = 0; i < 60; i++) {
    stream.push(i % 2 ? audio(pool, i) : video(pool, i, i % 30 === 0));
    if (i % 2) drain(fast);
  }
  t.true(slow.dropped > 0, 'the slow output overflowed');
  t.is(fast.dropped, 0, 'a fast output is unaffected');
  t.is(stream.framesDropped, slow.dropped);
  t.true(pool.buffersInUse > 0);
  stream.end('done');
  stream.detach(slow);
  t.is(stream.framesDropped, slow.dropped, 'drops of detached outputs are still counted');
  stream.detach(fast);
  t.is(stream.outputCount, 0);
  t.is(pool.buffersInUse, 0);
  t.is(pool.bytesInUse, 0);
});
