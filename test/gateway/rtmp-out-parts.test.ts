/**
 * The pieces of RTMP out that need no peer: URL parsing and push templates, aggregate splitting, frame to
 * FLV conversion, and the breaker and reconnector on a fake target (milliseconds, no sockets).
 */
import test from 'ava';
import { BrokenCircuitError } from 'cockatiel';
import { pino } from 'pino';
import { CodecError } from '../../codecs/errors.ts';
import { MessageType } from '../../codecs/rtmp/chunks.ts';
import { Reconnector, TargetBreaker, type SessionHandle } from '../../gateway/net/breaker.ts';
import { parseRtmpUrl, splitAggregate } from '../../gateway/rtmp/client.ts';
import { avcSequenceHeader, rtmpTimes } from '../../gateway/rtmp/egress.ts';
import { resolvePushUrl } from '../../gateway/rtmp/push.ts';
import { waitFor } from '../helpers/wait.ts';

const silent = pino({ level: 'silent' });

test('parseRtmpUrl: app is the first segment, the name keeps the rest and the query; redacted drops the query', (t) => {
  t.like(parseRtmpUrl('rtmp://example.com/live/cam?key=s3cret'), {
    host: 'example.com',
    port: 1935,
    app: 'live',
    name: 'cam?key=s3cret',
    tcUrl: 'rtmp://example.com:1935/live',
    redacted: 'rtmp://example.com:1935/live/cam',
  });
  t.like(parseRtmpUrl('rtmp://[::1]:1940/app/a/b'), { host: '::1', port: 1940, app: 'app', name: 'a/b', tcUrl: 'rtmp://[::1]:1940/app' });
  t.throws(() => parseRtmpUrl('http://example.com/live/cam'), { message: /only rtmp/ });
  t.throws(() => parseRtmpUrl('rtmp://example.com/live'), { message: /app and a stream name/ });
  t.throws(() => parseRtmpUrl('not a url'));
});

test('resolvePushUrl: {app} and {name} are substituted; an app-only path gets the stream name', (t) => {
  t.is(resolvePushUrl('rtmp://h/live', 'live', 'cam'), 'rtmp://h/live/cam');
  t.is(resolvePushUrl('rtmp://h:1936/live/?key=k', 'live', 'cam'), 'rtmp://h:1936/live/cam?key=k');
  t.is(resolvePushUrl('rtmp://h/{app}-copy/{name}_hd', 'live', 'cam'), 'rtmp://h/live-copy/cam_hd');
  t.is(resolvePushUrl('rtmp://a.rtmp.youtube.com/live2/xxxx-yyyy', 'live', 'cam'), 'rtmp://a.rtmp.youtube.com/live2/xxxx-yyyy');
});

test('splitAggregate: sub-messages with timestamps relative to the aggregate; overruns are refused', (t) => {
  const tag = (type: number, ts: number, body: Buffer): Buffer => {
    const h = Buffer.alloc(11);
    h[0] = type;
    h.writeUIntBE(body.length, 1, 3);
    h.writeUIntBE(ts & 0xffffff, 4, 3);
    h[7] = ts >>> 24;
    const prev = Buffer.alloc(4);
    prev.writeUInt32BE(11 + body.length);
    return Buffer.concat([h, body, prev]);
  };
  const payload = Buffer.concat([tag(9, 1000, Buffer.from([0x17, 1, 0, 0, 0])), tag(8, 1023, Buffer.from([0xaf, 1, 9]))]);
  const msgs = splitAggregate({ type: MessageType.Aggregate, streamId: 1, timestamp: 5000, payload });
  t.deepEqual(
    msgs.map((m) => [m.type, m.timestamp, m.payload.length]),
    [
      [9, 5000, 5],
      [8, 5023, 3],
    ],
  );
  t.throws(() => splitAggregate({ type: MessageType.Aggregate, streamId: 1, timestamp: 0, payload: payload.subarray(0, 25) }), { instanceOf: CodecError });
  t.throws(() => splitAggregate({ type: MessageType.Aggregate, streamId: 1, timestamp: 0, payload: payload.subarray(0, 35) }), { message: /overruns/ });
});

test('frames back to FLV: ms timestamps and composition time from 90 kHz; the avcC says 4-byte lengths', (t) => {
  t.deepEqual(rtmpTimes(90_000, 90_000 + 6000), { timestamp: 1000, compositionTime: 67 });
  t.deepEqual(rtmpTimes(3003, 3003), { timestamp: 33, compositionTime: 0 });
  const avcC = Buffer.from([1, 0x64, 0, 0x1f, 0xfd, 0xe1, 0, 0]); // lengthSizeMinusOne = 1 (2-byte lengths)
  const body = avcSequenceHeader(avcC);
  t.deepEqual([...body.subarray(0, 5)], [0x17, 0, 0, 0, 0]);
  t.is(body[5 + 4]! & 3, 3);
  t.is(avcC[4], 0xfd, 'the track config is not modified');
});

test('breaker: opens after N consecutive failures with the backoff step as cooldown, refuses until then, lets one probe through, closes on success', async (t) => {
  const b = new TargetBreaker('rtmp://fake:1935/live/x', { initialMs: 40, maxMs: 160, failures: 3 });
  let calls = 0;
  const fail = async (): Promise<never> => {
    calls++;
    throw new Error('refused');
  };
  for (let k = 1; k <= 3; k++) {
    await t.throwsAsync(b.attempt(fail), { message: 'refused' });
    const nominal = Math.min(160, 40 * 2 ** (k - 1));
    t.true(b.retryDelayMs >= nominal / 2 && b.retryDelayMs <= nominal, `step ${k}: ${b.retryDelayMs} ms`);
  }
  t.is(b.state, 'open');
  t.is(b.consecutiveFailures, 3);
  t.true(b.msUntilProbe() > 0 && b.msUntilProbe() <= b.retryDelayMs);
  await t.throwsAsync(b.attempt(fail), { instanceOf: BrokenCircuitError });
  t.is(calls, 3, 'refused without trying');
  await waitFor(() => b.msUntilProbe() === 0, { timeoutMs: 2000, intervalMs: 5, what: 'the cooldown' });
  t.is(await b.attempt(async () => 'up'), 'up');
  t.is(b.state, 'closed');
  t.is(b.consecutiveFailures, 0);
  t.deepEqual(
    b.attempts.map((a) => [a.state, a.ok]),
    [
      ['closed', false],
      ['closed', false],
      ['closed', false],
      ['half_open', true],
    ],
  );
});

test('reconnector: retries with the backoff, runs the session, reconnects after it ends, and close() releases the timer and the session', async (t) => {
  const breaker = new TargetBreaker('rtmp://fake:1935/live/y', { initialMs: 20, maxMs: 80, failures: 5 });
  let attempts = 0;
  const sessions: Array<SessionHandle & { end(reason: string): void; closedWith?: string }> = [];
  const r = new Reconnector({
    breaker,
    log: silent,
    connect: async () => {
      attempts++;
      if (attempts <= 2) throw new Error('not yet');
      let end!: (reason: string) => void;
      const ended = new Promise<string>((resolve) => (end = resolve));
      const s: SessionHandle & { end(reason: string): void; closedWith?: string } = {
        ended,
        end,
        close(reason) {
          s.closedWith = reason;
          end(reason);
        },
      };
      sessions.push(s);
      return s;
    },
  });
  r.start();
  await waitFor(() => r.state === 'up' || undefined, { timeoutMs: 2000, what: 'the session' });
  t.is(attempts, 3);
  sessions[0]!.end('peer left');
  await waitFor(() => sessions.length === 2 || undefined, { timeoutMs: 2000, what: 'a reconnect' });
  await r.close('done');
  t.is(sessions[1]!.closedWith, 'done');
  t.is(r.state, 'closed');
  t.false(r.holding);
});
