import test from 'ava';
import { StreamKeyAuthorizer, allowAll, type PublishAuthorizer, type PublishRequest } from '../../sessions/auth.ts';
import { PublishRefusedError, Registry, validStreamPart, type RegistryOptions } from '../../sessions/registry.ts';
import type { PublisherInfo, Stream } from '../../sessions/stream.ts';

function publisher(addr = '127.0.0.1:5000'): PublisherInfo & { closed: string[] } {
  const closed: string[] = [];
  return { protocol: 'rtmp', remoteAddress: addr, closed, close: (r) => closed.push(r) };
}

function req(app: string, name: string, key?: string): PublishRequest {
  return { app, name, protocol: 'rtmp', remoteAddress: '127.0.0.1:5000', ...(key === undefined ? {} : { key }) };
}

function registry(opts: Partial<RegistryOptions> = {}): Registry {
  return new Registry({
    maxStreams: 10,
    onConflict: 'takeover',
    limits: { gopCacheBytes: 1 << 20, output: { maxBytes: 1 << 20, maxFrames: 100 } },
    authorizer: allowAll,
    ...opts,
  });
}

async function refused(t: import('ava').ExecutionContext, p: Promise<unknown>, code: PublishRefusedError['code']): Promise<PublishRefusedError> {
  const err = await t.throwsAsync(p, { instanceOf: PublishRefusedError });
  t.is(err?.code, code, err?.message);
  return err!;
}

test('takeover closes the old publisher and ends its stream with "takeover"', async (t) => {
  const reg = registry();
  const events: string[] = [];
  reg.on('publish', (s) => events.push(`publish ${s.key}`));
  reg.on('unpublish', (s, r) => events.push(`unpublish ${s.key} ${r}`));
  const p1 = publisher('10.0.0.1:1');
  const s1 = await reg.publish(req('live', 'cam'), p1);
  const q = s1.attach();
  const p2 = publisher('10.0.0.2:2');
  const s2 = await reg.publish(req('live', 'cam'), p2);
  t.not(s1, s2);
  t.is(p1.closed.length, 1);
  t.regex(p1.closed[0]!, /taken over by rtmp publisher from 10\.0\.0\.2:2/);
  t.is(s1.ended, 'takeover');
  t.is(q.ended, 'takeover', "the old stream's outputs see the takeover");
  t.is(s2.ended, undefined);
  t.deepEqual(p2.closed, []);
  t.is(reg.get('live', 'cam'), s2);
  t.is(reg.size, 1);
  t.deepEqual(events, ['publish live/cam', 'unpublish live/cam takeover', 'publish live/cam']);
  s1.detach(q);
});

test('takeover ends the old stream with "takeover" even when the publisher ends it on close, as RtmpConnection does', async (t) => {
  const reg = registry();
  let own: Stream | undefined;
  const closed: string[] = [];
  // Like RtmpConnection.close(): ends its own stream with the reason it was given.
  const p1: PublisherInfo = {
    protocol: 'rtmp',
    remoteAddress: '10.0.0.1:1',
    close: (reason) => {
      closed.push(reason);
      own?.end(reason);
    },
  };
  own = await reg.publish(req('live', 'cam'), p1);
  const unpublished: string[] = [];
  reg.on('unpublish', (_s, r) => unpublished.push(r));
  const s2 = await reg.publish(req('live', 'cam'), publisher('10.0.0.2:2'));
  t.is(closed.length, 1);
  t.regex(closed[0]!, /^taken over by rtmp publisher from 10\.0\.0\.2:2$/);
  t.is(own.ended, 'takeover');
  t.deepEqual(unpublished, ['takeover']);
  t.is(reg.get('live', 'cam'), s2);
});

test('reject mode refuses a second publisher with "busy" and leaves the first alone', async (t) => {
  const reg = registry({ onConflict: 'reject' });
  const p1 = publisher();
  const s1 = await reg.publish(req('live', 'cam'), p1);
  await refused(t, reg.publish(req('live', 'cam'), publisher()), 'busy');
  t.deepEqual(p1.closed, []);
  t.is(s1.ended, undefined);
  t.is(reg.get('live', 'cam'), s1);
  s1.end('publisher left');
  t.is(reg.size, 0, 'an ended stream leaves the registry');
  const s2 = await reg.publish(req('live', 'cam'), publisher());
  t.is(reg.get('live', 'cam'), s2);
});

test('maxStreams refuses past the cap with "limit"; ending a stream makes room', async (t) => {
  const reg = registry({ maxStreams: 2 });
  const a = await reg.publish(req('live', 'a'), publisher());
  await reg.publish(req('live', 'b'), publisher());
  await refused(t, reg.publish(req('live', 'c'), publisher()), 'limit');
  t.is(reg.size, 2);
  // Taking over a live name at the cap is allowed: it does not add a stream.
  await reg.publish(req('live', 'b'), publisher());
  t.is(reg.size, 2);
  a.end('gone');
  await reg.publish(req('live', 'c'), publisher());
  t.deepEqual(reg.list().map((s: Stream) => s.key).sort(), ['live/b', 'live/c']);
});

test('invalid names are refused with "invalid"', async (t) => {
  const reg = registry();
  for (const [app, name] of [
    ['live', '..'],
    ['..', 'cam'],
    ['live', '.'],
    ['live', 'a/b'],
    ['a/b', 'cam'],
    ['live', ''],
    ['', 'cam'],
    ['live', '.hidden'],
    ['live', 'a b'],
    ['live', 'x'.repeat(129)],
  ] as const) {
    await refused(t, reg.publish(req(app, name), publisher()), 'invalid');
  }
  t.is(reg.size, 0);
  t.true(validStreamPart('cam-1_hd.v2'));
  t.true(validStreamPart('x'.repeat(128)));
  t.false(validStreamPart('..'));
});

test('StreamKeyAuthorizer: a missing or wrong key is refused with "unauthorized"; other apps are open', async (t) => {
  const auth = new StreamKeyAuthorizer({ live: ['s3cret', 'other'] });
  t.deepEqual(await auth.authorize(req('live', 'cam', 's3cret')), { ok: true });
  t.deepEqual(await auth.authorize(req('open', 'cam')), { ok: true });
  const missing = await auth.authorize(req('live', 'cam'));
  t.false(missing.ok);
  t.regex((missing as { reason: string }).reason, /requires a stream key/);

  const reg = registry({ authorizer: auth });
  const p = publisher();
  const e1 = await refused(t, reg.publish(req('live', 'cam'), p), 'unauthorized');
  t.regex(e1.message, /requires a stream key/);
  await refused(t, reg.publish(req('live', 'cam', ''), p), 'unauthorized');
  const e2 = await refused(t, reg.publish(req('live', 'cam', 'S3CRET'), p), 'unauthorized');
  t.regex(e2.message, /invalid stream key/);
  t.is(reg.size, 0);
  t.deepEqual(p.closed, []);
  await reg.publish(req('live', 'cam', 'other'), publisher());
  await reg.publish(req('open', 'cam'), publisher());
  t.is(reg.size, 2);
});

test('an unauthorized publisher cannot take over a live stream', async (t) => {
  const reg = registry({ authorizer: new StreamKeyAuthorizer({ live: ['k'] }) });
  const p1 = publisher();
  const s1 = await reg.publish(req('live', 'cam', 'k'), p1);
  await refused(t, reg.publish(req('live', 'cam', 'wrong'), publisher()), 'unauthorized');
  t.deepEqual(p1.closed, []);
  t.is(s1.ended, undefined);
});

test('close() ends every stream, closes publishers, and refuses new ones', async (t) => {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  const slowAuth: PublishAuthorizer = {
    authorize: async (r) => {
      if (r.name === 'slow') await gate;
      return { ok: true };
    },
  };
  const reg = registry({ authorizer: slowAuth });
  const pa = publisher();
  const pb = publisher();
  const a = await reg.publish(req('live', 'a'), pa);
  const b = await reg.publish(req('live', 'b'), pb);
  const inFlight = reg.publish(req('live', 'slow'), publisher());
  reg.close('shutdown');
  t.deepEqual(pa.closed, ['shutdown']);
  t.deepEqual(pb.closed, ['shutdown']);
  t.is(a.ended, 'shutdown');
  t.is(b.ended, 'shutdown');
  t.is(reg.size, 0);
  await refused(t, reg.publish(req('live', 'c'), publisher()), 'shutdown');
  release();
  await refused(t, inFlight, 'shutdown');
  t.is(reg.size, 0);
});

test('admit: a new stream is refused with "limit" and the reason while admit objects; a takeover is still allowed', async (t) => {
  let full: string | undefined = 'frame buffer pool is over 90% full';
  const registry = new Registry({
    maxStreams: 10,
    onConflict: 'takeover',
    authorizer: allowAll,
    limits: { gopCacheBytes: 1 << 20, output: { maxBytes: 1 << 20, maxFrames: 100 } },
    admit: () => full,
  });
  const req = { app: 'live', name: 'a', protocol: 'test', remoteAddress: 'x' };
  const pub = { protocol: 'test', remoteAddress: 'x', close: () => {} };
  const err = await t.throwsAsync(registry.publish(req, pub), { instanceOf: PublishRefusedError });
  t.is(err!.code, 'limit');
  t.regex(err!.message, /90% full/);
  full = undefined;
  const first = await registry.publish(req, pub);
  full = 'still full';
  const second = await registry.publish(req, pub);
  t.is(first.ended, 'takeover');
  t.is(registry.get('live', 'a'), second);
});
