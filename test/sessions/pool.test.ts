import test from 'ava';
import { setImmediate as tick } from 'node:timers/promises';
import { BufferPool, PoolExhaustedError, type PooledBuffer } from '../../sessions/pool.ts';

test('size classes: quarter steps of each power of two from minClass, exact above maxClass', (t) => {
  const pool = new BufferPool({ maxBytes: 1 << 20, minClass: 256, maxClass: 4096 });
  t.is(pool.classFor(0), 256);
  t.is(pool.classFor(1), 256);
  t.is(pool.classFor(256), 256);
  t.is(pool.classFor(257), 320);
  t.is(pool.classFor(1000), 1024);
  t.is(pool.classFor(1025), 1280);
  t.is(pool.classFor(3000), 3072);
  t.is(pool.classFor(4096), 4096);
  t.is(pool.classFor(4097), 4097);
  for (let size = 257; size <= 4096; size += 37) {
    const c = pool.classFor(size);
    t.true(c >= size && c <= size * 1.25, `class ${c} for ${size}`);
  }
  const b = pool.alloc(300);
  t.is(b.length, 300);
  t.is(b.bytes.length, 300);
  t.is(pool.bytesInUse, 320, 'accounted by class size');
  b.release();
  const big = pool.alloc(5000);
  t.is(pool.bytesInUse, 5000);
  big.release();
  t.is(pool.bytesInUse, 0);
  t.throws(() => pool.alloc(-1), { instanceOf: RangeError });
  t.throws(() => pool.alloc(1.5), { instanceOf: RangeError });
  t.throws(() => new BufferPool({ maxBytes: 0 }), { instanceOf: RangeError });
});

test('alloc, retain and release keep exact accounting and return to zero', (t) => {
  const pool = new BufferPool({ maxBytes: 1 << 20 });
  const a = pool.alloc(100);
  const b = pool.alloc(1000);
  t.is(pool.buffersInUse, 2);
  t.is(pool.bytesInUse, 256 + 1024);
  t.is(a.refs, 1);
  t.is(a.retain(), a);
  a.retain();
  t.is(a.refs, 3);
  a.release();
  a.release();
  t.is(pool.buffersInUse, 2, 'still one reference left');
  a.release();
  t.is(a.refs, 0);
  t.is(pool.buffersInUse, 1);
  t.is(pool.bytesInUse, 1024);
  b.release();
  t.is(pool.buffersInUse, 0);
  t.is(pool.bytesInUse, 0);
});

test('copyOf lays pieces end to end', (t) => {
  const pool = new BufferPool({ maxBytes: 1 << 20 });
  const c = pool.copyOf(Buffer.from([1, 2]), new Uint8Array([3]), Buffer.alloc(0), Buffer.from([4, 5, 6]));
  t.deepEqual([...c.bytes], [1, 2, 3, 4, 5, 6]);
  c.release();
  t.is(pool.bytesInUse, 0);
});

test('double release and retain after release throw, and do not disturb accounting', (t) => {
  const pool = new BufferPool({ maxBytes: 1 << 20 });
  const a = pool.alloc(10);
  const keep = pool.alloc(10);
  a.release();
  t.throws(() => a.release(), { message: /release of a released buffer/ });
  t.throws(() => a.retain(), { message: /retain of a released buffer/ });
  t.is(pool.buffersInUse, 1);
  t.is(pool.bytesInUse, 256);
  keep.release();
  t.is(pool.buffersInUse, 0);
  t.is(pool.bytesInUse, 0);
});

test('exhaustion throws PoolExhaustedError and leaves the pool usable', (t) => {
  const pool = new BufferPool({ maxBytes: 1024, minClass: 256 });
  const held = [pool.alloc(200), pool.alloc(256), pool.alloc(1), pool.alloc(100)];
  t.is(pool.bytesInUse, 1024);
  const err = t.throws(() => pool.alloc(1), { instanceOf: PoolExhaustedError });
  t.is(err?.requested, 1);
  t.is(err?.inUse, 1024);
  t.is(err?.limit, 1024);
  t.is(pool.buffersInUse, 4, 'a refused alloc counts nothing');
  held.pop()!.release();
  const again = pool.alloc(256);
  t.throws(() => pool.alloc(0), { instanceOf: PoolExhaustedError });
  again.release();
  for (const b of held) b.release();
  t.is(pool.bytesInUse, 0);
  // A request bigger than the whole pool is refused outright.
  t.throws(() => pool.alloc(2000), { instanceOf: PoolExhaustedError });
});

test('released slabs are reused from the free list, up to the idle bound', (t) => {
  const pool = new BufferPool({ maxBytes: 1 << 20, minClass: 256, maxClass: 4096, maxIdleBytesPerClass: 512 });
  const a = pool.alloc(200);
  a.bytes.fill(0xab);
  const slabA = a.bytes.buffer;
  a.release();
  const b = pool.alloc(100); // same 256 class
  t.is(b.bytes.buffer, slabA, 'the idle slab is handed out again');
  t.is(b.bytes[0], 0xab, 'contents are not zeroed');
  t.is(b.length, 100);
  const c = pool.alloc(300); // other class
  t.not(c.bytes.buffer, slabA);
  b.release();
  c.release();

  // Only maxIdleBytesPerClass / class = 2 slabs of 256 are kept idle.
  const three = [pool.alloc(256), pool.alloc(256), pool.alloc(256)];
  const slabs = three.map((x) => x.bytes.buffer);
  for (const x of three) x.release();
  const next = [pool.alloc(256), pool.alloc(256), pool.alloc(256)];
  const reused = next.filter((x) => slabs.includes(x.bytes.buffer)).length;
  t.is(reused, 2);
  for (const x of next) x.release();

  // Above maxClass nothing is recycled.
  const huge = pool.alloc(5000);
  const hugeSlab = huge.bytes.buffer;
  huge.release();
  const huge2 = pool.alloc(5000);
  t.not(huge2.bytes.buffer, hugeSlab);
  huge2.release();
  t.is(pool.bytesInUse, 0);
  t.is(pool.buffersInUse, 0);
});

/** Allocates in a frame of its own so that no reference survives it. */
function allocAndDrop(pool: BufferPool, size: number): void {
  const b: PooledBuffer = pool.alloc(size);
  b.bytes[0] = 1;
}

async function collectUntil(done: () => boolean, rounds = 200): Promise<boolean> {
  const gc = globalThis.gc;
  if (!gc) throw new Error('run with --expose-gc (ava nodeArguments)');
  for (let i = 0; i < rounds && !done(); i++) {
    gc();
    await tick();
  }
  return done();
}

test('leak detector: a buffer collected without release is reported and accounted', async (t) => {
  t.truthy(globalThis.gc, 'ava runs tests with --expose-gc');
  const leaks: Array<{ size: number; allocatedAt?: string }> = [];
  const pool = new BufferPool({ maxBytes: 1 << 20, trackStacks: true, onLeak: (l) => leaks.push(l) });
  const kept = pool.alloc(10);
  allocAndDrop(pool, 1000);
  t.is(pool.buffersInUse, 2);
  t.true(await collectUntil(() => pool.leaks >= 1), 'the dropped buffer was finalized');
  t.is(pool.leaks, 1);
  t.is(leaks.length, 1);
  t.is(leaks[0]!.size, 1024);
  t.regex(leaks[0]!.allocatedAt ?? '', /pool\.test\.ts/, 'the report says where it was allocated');
  t.is(pool.buffersInUse, 1, 'the leaked buffer no longer counts as in use');
  t.is(pool.bytesInUse, 256);
  kept.release();
  t.is(pool.bytesInUse, 0);
  t.is(pool.buffersInUse, 0);
});

test('leak detector: released buffers are never reported', async (t) => {
  let reported = 0;
  const pool = new BufferPool({ maxBytes: 1 << 20, onLeak: () => reported++ });
  (() => {
    for (let i = 0; i < 50; i++) pool.alloc(100).release();
  })();
  // A canary that is dropped proves that finalizers did run during the wait.
  allocAndDrop(pool, 10);
  t.true(await collectUntil(() => pool.leaks >= 1));
  t.is(reported, 1, 'only the canary leaked');
  t.is(pool.buffersInUse, 0);
  t.is(pool.bytesInUse, 0);
});
