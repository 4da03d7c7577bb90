/**
 * The WHIP HTTP surface without a browser: CORS, refusals (and that they leave no peer or stream
 * behind), authorisation, limits, the session resource (PATCH, DELETE) and the handshake deadline.
 * The OBS-like offer points at unreachable addresses, so its peers never connect.
 */
import test, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { whipRoutes, type WhipDeps } from '../../gateway/webrtc/whip.ts';
import { WeriftEngine } from '../../gateway/webrtc/werift-engine.ts';
import type { WebRtcEngine } from '../../gateway/webrtc/engine.ts';
import { StreamKeyAuthorizer, type PublishAuthorizer, type PublishRequest } from '../../sessions/auth.ts';
import { captureLog, startServer, testPool, testRegistry, waitFor } from './helpers.ts';

const OBS = readFileSync(new URL('./fixtures/obs-offer.sdp', import.meta.url), 'utf8');

async function setup(t: ExecutionContext, opts: Partial<WhipDeps> & { authorizer?: PublishAuthorizer } = {}) {
  const registry = testRegistry(opts.authorizer);
  const pool = testPool();
  const { log, lines } = captureLog();
  const engine = new WeriftEngine({ pool });
  const rejected: string[] = [];
  const deadlines: string[] = [];
  const whip = whipRoutes({
    registry,
    pool,
    log,
    deadlines: { connectMs: 10_000, idleMs: 10_000 },
    maxSessions: 8,
    engine,
    onRejected: (r) => rejected.push(r),
    onDeadline: (k) => deadlines.push(k),
    ...opts,
  });
  const server = await startServer(whip.routes);
  t.teardown(async () => {
    await whip.close();
    await server.close();
  });
  const post = (path: string, body: string, headers: Record<string, string> = {}) =>
    fetch(`${server.url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/sdp', ...headers } });
  return { registry, pool, lines, engine, whip, server, rejected, deadlines, post };
}

test('OPTIONS answers CORS preflights on the endpoint and the session resource', async (t) => {
  const { server } = await setup(t);
  const r = await fetch(`${server.url}/whip/live/cam`, {
    method: 'OPTIONS',
    headers: { origin: 'http://example.test', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
  });
  t.is(r.status, 204);
  t.is(r.headers.get('access-control-allow-origin'), '*');
  t.regex(r.headers.get('access-control-allow-methods') ?? '', /POST/);
  t.regex(r.headers.get('access-control-allow-headers') ?? '', /Authorization/);
  t.is(r.headers.get('accept-post'), 'application/sdp');
  const r2 = await fetch(`${server.url}/whip/live/cam/AAAAAAAAAAAAAAAAAAAAAAAA`, { method: 'OPTIONS' });
  t.is(r2.status, 204);
  t.regex(r2.headers.get('access-control-allow-methods') ?? '', /DELETE/);
  t.is(r2.headers.get('accept-patch'), 'application/trickle-ice-sdpfrag');
});

test('POST of the OBS offer: 201, answer, Location, ETag; DELETE ends it; nothing left open', async (t) => {
  const env = await setup(t);
  const r = await env.post('/whip/live/obs', OBS, { authorization: 'Bearer abc' });
  const answer = await r.text();
  t.is(r.status, 201, answer);
  t.is(r.headers.get('content-type'), 'application/sdp');
  t.is(r.headers.get('access-control-allow-origin'), '*');
  t.regex(r.headers.get('access-control-expose-headers') ?? '', /Location/);
  const location = r.headers.get('location')!;
  t.regex(location, /^\/whip\/live\/obs\/[A-Za-z0-9_-]{24}$/);
  t.regex(r.headers.get('etag') ?? '', /^"[A-Za-z0-9_-]+"$/);
  // The answer: both sections, the chosen codecs, ICE and DTLS, and none of what was stripped.
  t.regex(answer, /^m=audio \d+ UDP\/TLS\/RTP\/SAVPF 111\r$/m);
  t.regex(answer, /^m=video \d+ UDP\/TLS\/RTP\/SAVPF 96\r$/m);
  t.regex(answer, /a=rtpmap:111 OPUS\/48000\/2/i);
  t.regex(answer, /a=rtpmap:96 H264\/90000/);
  t.regex(answer, /a=recvonly/);
  t.regex(answer, /a=fingerprint:sha-256 /);
  t.regex(answer, /a=ice-ufrag:/);
  t.regex(answer, /a=candidate:/);
  t.regex(answer, /a=group:BUNDLE 0 1/);
  t.notRegex(answer, /transport-cc|goog-remb|a=extmap:/);
  t.is(env.whip.sessions(), 1);
  t.is(env.engine.openPeers, 1);
  const stream = env.registry.get('live', 'obs');
  t.truthy(stream);
  t.is(stream!.publisher.protocol, 'webrtc');

  const del = await fetch(`${env.server.url}${location}`, { method: 'DELETE' });
  t.is(del.status, 200);
  t.is(env.whip.sessions(), 0);
  t.is(env.engine.openPeers, 0);
  t.is(env.registry.get('live', 'obs'), undefined);
  t.is(stream!.ended, 'deleted by the client (WHIP DELETE)');
  t.is((await fetch(`${env.server.url}${location}`, { method: 'DELETE' })).status, 404);
  const started = env.lines.filter((l) => l.msg === 'whip session started');
  const ended = env.lines.filter((l) => l.msg === 'whip session ended');
  t.is(started.length, 1);
  t.is(ended.length, 1);
  t.is(ended[0]!.reason, 'deleted by the client (WHIP DELETE)');
  t.is(ended[0]!.stream, 'live/obs');
  t.is(env.pool.bytesInUse, 0);
});

test('bad offers are refused with 400/406/415/413 and a reason, leaving no peer or stream', async (t) => {
  const env = await setup(t);
  const cases: [string, string, Record<string, string>, number, RegExp, string][] = [
    ['garbage', 'this is not sdp', {}, 400, /not an SDP line/, 'sdp'],
    ['no media', 'v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n', {}, 400, /no media sections/, 'sdp'],
    ['no ICE', OBS.replace(/a=ice-(ufrag|pwd):.*\r\n/g, ''), {}, 400, /no ICE credentials/, 'sdp'],
    ['VP8 only', OBS.replace('a=rtpmap:96 H264/90000', 'a=rtpmap:96 VP8/90000').replace(/a=fmtp:96.*\r\n/, ''), {}, 406, /no H\.264/, 'codec'],
    ['PCMU only', OBS.replace('OPUS/48000/2', 'PCMU/8000'), {}, 406, /no Opus/, 'codec'],
    ['content type', OBS, { 'content-type': 'text/plain' }, 415, /application\/sdp/, 'media-type'],
    ['too large', `${OBS}${'a=x:y\r\n'.repeat(12_000)}`, {}, 413, /over/, 'too-large'],
  ];
  for (const [name, body, headers, status, re, label] of cases) {
    const r = await env.post('/whip/live/bad', body, headers);
    const text = await r.text();
    t.is(r.status, status, `${name}: ${text}`);
    t.regex(text, re, name);
    t.is(r.headers.get('access-control-allow-origin'), '*', name);
    t.is(env.rejected.at(-1), label, name);
    t.is(env.engine.openPeers, 0, `${name}: no peer left open`);
    t.is(env.registry.size, 0, `${name}: no stream left`);
  }
  t.is(env.whip.sessions(), 0);
  const r = await env.post('/whip/live/a/b/c', OBS);
  t.is(r.status, 404, 'a path that is not /whip/{app}/{name}');
  const r2 = await env.post('/whip/live/na%20me', OBS);
  t.is(r2.status, 400);
  t.regex(await r2.text(), /invalid stream name/);
  t.is(env.engine.openPeers, 0);
});

test('the Bearer token is the key for publish authorisation: 401 without, 403 wrong, 201 right', async (t) => {
  const seen: PublishRequest[] = [];
  const keys = new StreamKeyAuthorizer({ live: ['k1'] });
  const env = await setup(t, {
    authorizer: {
      authorize: async (req) => {
        seen.push(req);
        return keys.authorize(req);
      },
    },
  });
  const none = await env.post('/whip/live/a', OBS);
  t.is(none.status, 401);
  t.is(none.headers.get('www-authenticate'), 'Bearer');
  const wrong = await env.post('/whip/live/a', OBS, { authorization: 'Bearer nope' });
  t.is(wrong.status, 403);
  t.regex(await wrong.text(), /invalid stream key/);
  t.is(env.engine.openPeers, 0, 'refused before any peer exists');
  const right = await env.post('/whip/live/a', OBS, { authorization: 'Bearer k1' });
  t.is(right.status, 201);
  t.deepEqual(
    seen.map((r) => [r.app, r.name, r.protocol, r.key]),
    [
      ['live', 'a', 'webrtc', undefined],
      ['live', 'a', 'webrtc', 'nope'],
      ['live', 'a', 'webrtc', 'k1'],
    ],
  );
  t.truthy(seen[0]!.remoteAddress);
  t.deepEqual(env.rejected, ['unauthorized', 'unauthorized']);
  // The session resource refuses a different token.
  const loc = right.headers.get('location')!;
  t.is((await fetch(`${env.server.url}${loc}`, { method: 'DELETE', headers: { authorization: 'Bearer other' } })).status, 403);
  t.is((await fetch(`${env.server.url}${loc}`, { method: 'DELETE', headers: { authorization: 'Bearer k1' } })).status, 200);
});

test('PATCH: trickle candidates 204, stale If-Match 412, wrong type 415, ICE restart 422', async (t) => {
  const env = await setup(t);
  const r = await env.post('/whip/live/trickle', OBS);
  t.is(r.status, 201);
  const url = `${env.server.url}${r.headers.get('location')}`;
  const etag = r.headers.get('etag')!;
  const frag = 'a=ice-ufrag:Qk7v\r\na=ice-pwd:u4Hc9bVw2sTzX0pLmN8rQe\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:3 1 UDP 2122317822 198.51.100.8 51800 typ host\r\na=end-of-candidates\r\n';
  const patch = (body: string, headers: Record<string, string>) => fetch(url, { method: 'PATCH', body, headers: { 'content-type': 'application/trickle-ice-sdpfrag', ...headers } });
  const ok = await patch(frag, { 'if-match': etag });
  t.is(ok.status, 204, await ok.text());
  t.is((await patch(frag, { 'if-match': '"stale"' })).status, 412);
  t.is((await patch(frag, { 'content-type': 'application/sdp' })).status, 415);
  const restart = await patch(frag.replace('Qk7v', 'Zz9y'), {});
  t.is(restart.status, 422);
  t.regex(await restart.text(), /ICE restart/);
  t.is((await patch('a=candidate:garbage\r\n', {})).status, 400);
  t.is((await fetch(url.replace(/[^/]+$/, 'AAAAAAAAAAAAAAAAAAAAAAAA'), { method: 'PATCH', body: frag, headers: { 'content-type': 'application/trickle-ice-sdpfrag' } })).status, 404);
  t.is((await fetch(url, { method: 'GET' })).status, 405, 'other methods on the resource');
  t.is((await fetch(`${env.server.url}/whip/live/trickle`, { method: 'PATCH', body: frag })).status, 405, 'PATCH on the endpoint');
});

test('ICE/DTLS not complete within connectMs: the session is closed and counted', async (t) => {
  const env = await setup(t, { deadlines: { connectMs: 600, idleMs: 10_000 } });
  const r = await env.post('/whip/live/late', OBS);
  t.is(r.status, 201);
  const stream = env.registry.get('live', 'late')!;
  const reason = await new Promise<string>((resolve) => stream.once('end', resolve));
  t.regex(reason, /handshake deadline/);
  t.deepEqual(env.deadlines, ['handshake']);
  await waitFor('peer closed', 3000, () => env.engine.openPeers === 0 && env.whip.sessions() === 0);
  const ended = env.lines.find((l) => l.msg === 'whip session ended');
  t.regex(String(ended?.reason), /handshake deadline/);
  t.false(ended?.connected as boolean);
});

test('session limit: past maxSessions a POST gets 503; close() ends every session', async (t) => {
  const env = await setup(t, { maxSessions: 2 });
  t.is((await env.post('/whip/live/one', OBS)).status, 201);
  const first = env.registry.get('live', 'one')!;
  t.is((await env.post('/whip/live/two', OBS)).status, 201);
  const over = await env.post('/whip/live/three', OBS);
  t.is(over.status, 503);
  t.truthy(over.headers.get('retry-after'));
  t.is(env.rejected.at(-1), 'limit');
  t.is(env.engine.openPeers, 2);
  // Closing the routes ends every session and refuses new ones.
  await env.whip.close();
  t.is(env.engine.openPeers, 0);
  t.is(first.ended, 'server shutting down');
  t.is((await env.post('/whip/live/one', OBS)).status, 503, 'closed routes refuse new sessions');
});

test('takeover: a second publisher on the same name ends the first session', async (t) => {
  const env = await setup(t);
  const a = await env.post('/whip/live/same', OBS);
  t.is(a.status, 201);
  const first = env.registry.get('live', 'same')!;
  const b = await env.post('/whip/live/same', OBS);
  t.is(b.status, 201);
  t.is(first.ended, 'takeover');
  await waitFor('old peer closed', 3000, () => env.engine.openPeers === 1 && env.whip.sessions() === 1);
  t.not(env.registry.get('live', 'same'), first);
  t.is((await fetch(`${env.server.url}${a.headers.get('location')}`, { method: 'DELETE' })).status, 404);
});

test('an offer the engine refuses: 400 with its reason, the peer closed, the stream ended', async (t) => {
  const pool = testPool();
  const werift = new WeriftEngine({ pool });
  // Passes the gateway's checks, then breaks inside werift (a candidate werift cannot parse).
  const breaking: WebRtcEngine = {
    name: 'breaking',
    get openPeers() {
      return werift.openPeers;
    },
    open: (offer, sink, log) => werift.open({ ...offer, sdp: offer.sdp.replace('a=end-of-candidates', 'a=candidate:x') }, sink, log),
  };
  const env = await setup(t, { engine: breaking, pool });
  const r = await env.post('/whip/live/eng', OBS);
  t.is(r.status, 400);
  t.regex(await r.text(), /werift refused the offer/);
  t.deepEqual(env.rejected, ['engine']);
  t.is(werift.openPeers, 0);
  t.is(env.registry.size, 0);
  t.is(env.whip.sessions(), 0);
});
