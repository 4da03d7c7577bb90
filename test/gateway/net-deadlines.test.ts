import test, { type ExecutionContext } from 'ava';

// Timing tests: serial, so that one test's large writes do not delay another's timers.
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { setTimeout as delay } from 'node:timers/promises';
import { SocketDeadlines, type DeadlineKind, type DeadlineOptions } from '../../gateway/net/deadlines.ts';

/** A connected loopback pair: `server` is the accepted side, `client` the peer. All closed in teardown. */
async function pair(t: ExecutionContext): Promise<{ server: Socket; client: Socket }> {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  const accepted = once(srv, 'connection') as Promise<[Socket]>;
  const client = connect(port, '127.0.0.1');
  await once(client, 'connect');
  const [server] = await accepted;
  for (const s of [client, server]) s.on('error', () => {});
  t.teardown(() => {
    client.destroy();
    server.destroy();
    srv.close();
  });
  return { server, client };
}

interface Expiry {
  kind: DeadlineKind;
  at: number;
}

function watch(server: Socket, opts: DeadlineOptions, t: ExecutionContext) {
  const fired: Expiry[] = [];
  let notify: (() => void) | undefined;
  const d = new SocketDeadlines(server, opts, (kind) => {
    fired.push({ kind, at: performance.now() });
    notify?.();
  });
  t.teardown(() => d.clear());
  /** Resolves at the next expiry, or rejects after `withinMs` (a bound, not a sleep). */
  const next = (withinMs: number) =>
    new Promise<Expiry>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no deadline expired within ${withinMs} ms`)), withinMs);
      notify = () => {
        clearTimeout(timer);
        notify = undefined;
        resolve(fired[fired.length - 1]!);
      };
    });
  return { d, fired, next };
}

const LONG = 60_000;

test.serial('the handshake deadline fires once', async (t) => {
  const { server } = await pair(t);
  const start = performance.now();
  const { fired, next } = watch(server, { handshakeMs: 80, idleMs: LONG, writeStallMs: LONG }, t);
  const e = await next(5000);
  t.is(e.kind, 'handshake');
  const elapsed = e.at - start;
  t.true(elapsed >= 70 && elapsed < 3000, `fired after ${Math.round(elapsed)} ms`);
  // Nothing else can fire: every timer was cleared. Give a would-be second timer ample time.
  await delay(250);
  t.deepEqual(fired.map((f) => f.kind), ['handshake']);
});

test.serial('after handshakeDone, reads keep the idle deadline away; it fires after silence', async (t) => {
  const { server, client } = await pair(t);
  const idleMs = 300;
  const { d, fired, next } = watch(server, { handshakeMs: 100, idleMs, writeStallMs: LONG }, t);
  d.handshakeDone();
  let lastRead = performance.now();
  let reads = 0;
  server.on('data', () => {
    d.read();
    lastRead = performance.now();
    reads++;
  });
  // Keep talking for several idle periods (and past the handshake deadline).
  const talkUntil = performance.now() + idleMs * 4;
  while (performance.now() < talkUntil) {
    client.write('x');
    await delay(idleMs / 6);
  }
  t.deepEqual(fired, [], 'no deadline fired while reads kept coming');
  t.true(reads >= 5, `the server read ${reads} times`);
  const e = await next(5000);
  t.is(e.kind, 'idle');
  const silent = e.at - lastRead;
  t.true(silent >= idleMs * 0.9 && silent < idleMs + 2000, `fired after ${Math.round(silent)} ms of silence`);
  t.is(fired.length, 1);
});

test.serial('idle fires after handshakeDone with no reads at all', async (t) => {
  const { server } = await pair(t);
  const { d, next } = watch(server, { handshakeMs: LONG, idleMs: 100, writeStallMs: LONG }, t);
  const start = performance.now();
  d.handshakeDone();
  const e = await next(5000);
  t.is(e.kind, 'idle');
  t.true(e.at - start >= 90 && e.at - start < 3000, `${Math.round(e.at - start)} ms`);
});

test.serial('disableIdle: a receive-only session is not cut for not reading', async (t) => {
  const { server } = await pair(t);
  const a = watch(server, { handshakeMs: LONG, idleMs: 60, writeStallMs: LONG }, t);
  a.d.handshakeDone();
  a.d.disableIdle();
  const { server: server2 } = await pair(t);
  const b = watch(server2, { handshakeMs: LONG, idleMs: 60, writeStallMs: LONG }, t);
  b.d.disableIdle(); // before the handshake ends, too
  b.d.handshakeDone();
  // A control with idle enabled shows how long is long enough.
  const { server: server3 } = await pair(t);
  const c = watch(server3, { handshakeMs: LONG, idleMs: 60, writeStallMs: LONG }, t);
  c.d.handshakeDone();
  t.is((await c.next(5000)).kind, 'idle');
  await delay(200);
  t.deepEqual(a.fired, []);
  t.deepEqual(b.fired, []);
});

/** Writes until write() returns false, telling the deadlines each result. */
function fill(server: Socket, d: SocketDeadlines): number {
  const chunk = Buffer.alloc(256 * 1024, 0x55);
  let writes = 0;
  for (;;) {
    writes++;
    const flushed = server.write(chunk);
    d.wrote(flushed);
    if (!flushed) return writes;
  }
}

test.serial('write-stall fires when the peer does not read', async (t) => {
  const { server, client } = await pair(t);
  client.pause();
  const stallMs = 150;
  const { d, fired, next } = watch(server, { handshakeMs: LONG, idleMs: LONG, writeStallMs: stallMs }, t);
  d.handshakeDone();
  d.disableIdle();
  // Each time the kernel takes what was queued ('drain'), write more, until its buffers are full.
  let lastFalse = performance.now();
  let drains = 0;
  server.on('drain', () => {
    drains++;
    if (fired.length === 0) {
      fill(server, d);
      lastFalse = performance.now();
    }
  });
  fill(server, d);
  lastFalse = performance.now();
  const e = await next(10_000);
  t.is(e.kind, 'write_stall');
  const stalled = e.at - lastFalse;
  t.true(stalled >= stallMs * 0.9 && stalled < stallMs + 3000, `fired ${Math.round(stalled)} ms after the last unflushed write (${drains} drains before)`);
  t.true(server.writableLength > 0, 'data was still waiting for the peer');
  t.is(fired.length, 1);
});

test.serial('write-stall is cleared by drain', async (t) => {
  const { server, client } = await pair(t);
  client.pause();
  const stallMs = 1000;
  const { d, fired, next } = watch(server, { handshakeMs: LONG, idleMs: LONG, writeStallMs: stallMs }, t);
  d.handshakeDone();
  d.disableIdle();
  // One big write the kernel cannot take at once while the peer is paused (socket buffers here
  // are a few MiB at most until the reader reads).
  const big = Buffer.alloc(16 * 1024 * 1024, 0x33);
  const flushed = server.write(big);
  t.false(flushed);
  d.wrote(flushed);
  const wroteAt = performance.now();
  let received = 0;
  client.on('data', (b: Buffer) => (received += b.length));
  const drained = once(server, 'drain');
  await delay(stallMs / 4);
  t.true(server.writableLength > 0, 'still stalled before the peer reads');
  client.resume();
  await drained;
  const drainedAt = performance.now();
  // The stall deadline would have fired by now had drain not cleared it; wait past it from the write.
  const waitUntil = wroteAt + stallMs * 2;
  if (waitUntil > performance.now()) await delay(waitUntil - performance.now());
  t.deepEqual(fired, [], `no write-stall (drained after ${Math.round(drainedAt - wroteAt)} ms)`);
  // And a new stall after the drain starts a fresh deadline.
  client.pause();
  const again = server.write(big);
  d.wrote(again);
  t.false(again);
  t.is((await next(10_000)).kind, 'write_stall');
  t.is(fired.length, 1);
  t.true(received > 0);
});
