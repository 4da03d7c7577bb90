/**
 * RTMP pull and play against nginx-rtmp: the gateway pulls a stream ffmpeg publishes to nginx, serves it
 * over RTMP play and HLS; survives nginx being killed (backoff, breaker, DISCONTINUITY, monotonic time);
 * and cuts sources that hang at every stage with its deadlines.
 */
import test, { type ExecutionContext } from 'ava';
import { createServer, connect, type Socket } from 'node:net';
import { parseMediaPlaylist } from '../../codecs/m3u8.ts';
import type { ConfigInput } from '../../config/schema.ts';
import type { AttemptRecord } from '../../gateway/net/breaker.ts';
import { publish } from '../helpers/ffmpeg.ts';
import { startTestGateway, type TestGateway } from '../helpers/gateway.ts';
import { startNginx } from '../helpers/nginx.ts';
import { run, start } from '../helpers/process.ts';
import { waitFor } from '../helpers/wait.ts';

interface Publication {
  key: string;
  firstDts: number | undefined;
  lastDts: number | undefined;
  /** Frames whose DTS did not increase on their track. */
  backwards: number;
  frames: number;
}

/** Reads every stream published on the gateway through its own output queue, recording its timeline. */
function watchTimelines(gw: TestGateway): Publication[] {
  const pubs: Publication[] = [];
  gw.registry.on('publish', (s) => {
    const rec: Publication = { key: s.key, firstDts: undefined, lastDts: undefined, backwards: 0, frames: 0 };
    pubs.push(rec);
    const q = s.attach();
    const last = new Map<number, number>();
    const drain = (): void => {
      for (let ev = q.shift(); ev; ev = q.shift()) {
        if (ev.type !== 'frame') continue;
        const f = ev.frame;
        rec.frames++;
        rec.firstDts ??= f.dts;
        if ((last.get(f.track) ?? -1) >= f.dts) rec.backwards++;
        last.set(f.track, f.dts);
        rec.lastDts = Math.max(rec.lastDts ?? 0, f.dts);
        f.data.release();
      }
      if (q.ended !== undefined) s.detach(q);
    };
    q.onReadable = drain;
    drain();
  });
  return pubs;
}

async function playlist(gw: TestGateway, path: string): Promise<string | undefined> {
  const res = await fetch(gw.httpUrl(path));
  return res.status === 200 ? res.text() : undefined;
}

/** Closes the gateway and checks that it let go of everything: pool, pulls, pushes, streams. */
async function closeClean(t: ExecutionContext, gw: TestGateway): Promise<void> {
  await gw.close();
  t.is(gw.pool.bytesInUse, 0, 'pool bytes back to 0');
  t.is(gw.pool.buffersInUse, 0);
  t.is(gw.pulls.holding, 0, 'no pull holds a timer, attempt or session');
  t.is(gw.pushes.holding, 0, 'no push holds a timer, attempt, connection or queue');
  t.is(gw.registry.size, 0);
}

const FAST: ConfigInput = {
  outbound: { connectTimeoutMs: 1000, backoff: { initialMs: 200, maxMs: 1600 }, breaker: { failures: 3 } },
  deadlines: { handshakeMs: 1000, idleMs: 3000, writeStallMs: 3000 },
};

test.serial('pull from nginx-rtmp: RTMP play (ffprobe, ffmpeg) and HLS carry H.264 640x360 + AAC', async (t) => {
  const nginx = await startNginx();
  t.teardown(() => nginx.dispose());
  const src = publish(nginx.url('live/src'), { seconds: 60, width: 640, height: 360 });
  t.teardown(() => src.kill());
  const gw = await startTestGateway({ ...FAST, pulls: [{ url: nginx.url('live/src'), app: 'live', name: 'pulled' }] });
  t.teardown(() => gw.close());

  const s = await waitFor(() => gw.registry.get('live', 'pulled'), { timeoutMs: 20_000, what: 'the pulled stream' });
  t.is(s.publisher.protocol, 'rtmp-pull');
  await waitFor(() => s.tracks.size === 2 && s.framesIn > 30, { timeoutMs: 10_000, what: 'both tracks and frames' });

  const probe = await run(
    'ffprobe',
    ['-v', 'error', '-show_entries', 'stream=codec_name,width,height', '-of', 'json', gw.rtmpUrl('live/pulled')],
    { timeoutMs: 30_000 },
  );
  t.is(probe.code, 0, probe.stderr);
  const streams = (JSON.parse(probe.stdout) as { streams: Array<{ codec_name: string; width?: number; height?: number }> }).streams;
  t.like(streams.find((x) => x.codec_name === 'h264'), { width: 640, height: 360 });
  t.truthy(streams.find((x) => x.codec_name === 'aac'));

  // ffmpeg as a player: it checks the server's handshake digest, then decodes 3 s without an error.
  const play = await run('ffmpeg', ['-v', 'error', '-i', gw.rtmpUrl('live/pulled'), '-t', '3', '-map', '0:v', '-f', 'framecrc', '-'], {
    timeoutMs: 30_000,
  });
  t.is(play.code, 0, play.stderr);
  t.is(play.stderr.trim(), '');
  const decoded = play.stdout.split('\n').filter((l) => /^\d/.test(l)).length;
  t.true(decoded >= 80, `ffmpeg decoded ${decoded} frames in 3 s`);

  const text = await waitFor(
    async () => {
      const p = await playlist(gw, '/hls/live/pulled/index.m3u8');
      return p && parseMediaPlaylist(p).segments.length >= 2 ? p : undefined;
    },
    { timeoutMs: 20_000, what: 'two HLS segments' },
  );
  t.false(text.includes('#EXT-X-DISCONTINUITY'), 'a pull starts cleanly (configs before frames)');
  const hls = await run(
    'ffprobe',
    ['-v', 'error', '-show_entries', 'stream=codec_name,width,height', '-of', 'json', gw.httpUrl('/hls/live/pulled/index.m3u8')],
    { timeoutMs: 30_000 },
  );
  t.is(hls.code, 0, hls.stderr);
  const hlsStreams = (JSON.parse(hls.stdout) as { streams: Array<{ codec_name: string; width?: number; height?: number }> }).streams;
  t.like(hlsStreams.find((x) => x.codec_name === 'h264'), { width: 640, height: 360 });
  t.truthy(hlsStreams.find((x) => x.codec_name === 'aac'));

  const api = (await (await fetch(gw.httpUrl('/api/v1/pulls'))).json()) as { pulls: Array<Record<string, unknown>> };
  t.like(api.pulls[0], { app: 'live', name: 'pulled', source: 'config', state: 'up', url: nginx.url('live/src') });
  t.is(await gw.metric('tributary_breaker_state', { target: nginx.url('live/src') }), 0);
  t.true((await gw.metric('tributary_rtmp_frames_out_total', { output: 'play' })) > 80);
  await closeClean(t, gw);
});

test.serial('nginx killed mid-stream: backoff timings, breaker opens and probes, playlist stays valid; nginx back: the pull resumes, HLS continues after a DISCONTINUITY, time never goes back', async (t) => {
  const nginx = await startNginx();
  t.teardown(() => nginx.dispose());
  let src = publish(nginx.url('live/src'), { seconds: 60, width: 320, height: 240, gop: 15 });
  t.teardown(() => src.kill());
  const gw = await startTestGateway({
    ...FAST,
    hls: { targetDurationMs: 1000, graceMs: 60_000, windowSegments: 20 },
    pulls: [{ url: nginx.url('live/src'), app: 'live', name: 'cam' }],
  });
  t.teardown(() => gw.close());
  const timelines = watchTimelines(gw);
  const target = nginx.url('live/src');

  const first = await waitFor(() => gw.registry.get('live', 'cam'), { timeoutMs: 20_000, what: 'the pulled stream' });
  await waitFor(async () => (await playlist(gw, '/hls/live/cam/index.m3u8'))?.includes('seg-2.ts'), { timeoutMs: 20_000, what: 'three HLS segments' });

  await Promise.all([nginx.stop(), src.kill()]);
  await waitFor(() => first.ended, { timeoutMs: 5000, what: 'the pull to notice' });
  const breaker = gw.breakers.get(target)!;
  // 3 failures (closed) open the breaker; then two probes that fail and reopen it.
  await waitFor(() => breaker.attempts.filter((a) => !a.ok).length >= 5, { timeoutMs: 15_000, what: 'five failed attempts' });
  t.is(breaker.state, 'open');
  t.is(await gw.metric('tributary_breaker_state', { target }), 1);
  const viewed = (await (await fetch(gw.httpUrl('/api/v1/breakers'))).json()) as { breakers: Array<{ target: string; state: string }> };
  t.like(viewed.breakers.find((b) => b.target === target), { state: 'open' });

  // The reconnect schedule: after the drop, wait d0; after the k-th failure wait d_k, with d_k drawn from
  // [D_k/2, D_k), D_k = min(1600, 200 * 2^k); attempts happen when those waits say.
  const ended = gw.logs.find((l) => l.msg === 'outbound session ended; reconnecting')!;
  const failed = breaker.attempts.filter((a) => !a.ok) as Array<AttemptRecord & { retryInMs: number }>;
  const nominal = (k: number): number => Math.min(1600, 200 * 2 ** k);
  const d0 = ended.retryInMs as number;
  t.true(d0 >= nominal(0) / 2 && d0 <= nominal(0), `first wait ${d0} ms`);
  const gaps: string[] = [`drop -> #1: ${failed[0]!.at - (ended.time as number)} ms (wait ${d0})`];
  t.true(failed[0]!.at - (ended.time as number) >= d0 - 2 && failed[0]!.at - (ended.time as number) <= d0 + 300, gaps[0]);
  for (let i = 0; i < 5; i++) {
    const a = failed[i]!;
    const k = i + 1;
    t.true(a.retryInMs >= nominal(k) / 2 && a.retryInMs <= nominal(k), `wait after failure ${k}: ${a.retryInMs} ms, nominal ${nominal(k)}`);
    t.is(a.state, i < 3 ? 'closed' : 'half_open', `attempt ${k} ran ${i < 3 ? 'with the breaker closed' : 'as the half-open probe'}`);
    const next = failed[i + 1];
    if (next) {
      const gap = next.at - a.at;
      gaps.push(`#${k} -> #${k + 1}: ${gap} ms (wait ${a.retryInMs})`);
      t.true(gap >= a.retryInMs - 2 && gap <= a.retryInMs + 300, gaps[gaps.length - 1]);
    }
  }
  t.log(gaps.join('; '));
  t.true((await gw.metric('tributary_outbound_attempts_total', { kind: 'pull', result: 'connect' })) >= 5);

  // The playlist stays valid while the source is away: it ended (ENDLIST) and is kept for the grace period.
  const during = await playlist(gw, '/hls/live/cam/index.m3u8');
  t.truthy(during);
  const parsedDuring = parseMediaPlaylist(during!);
  t.true(parsedDuring.endList);
  t.true(parsedDuring.segments.length >= 3);

  await nginx.restart();
  src = publish(nginx.url('live/src'), { seconds: 60, width: 320, height: 240, gop: 15 });
  const backAt = Date.now();
  const pending = breaker.msUntilProbe();
  const second = await waitFor(
    () => {
      const s = gw.registry.get('live', 'cam');
      return s && s !== first ? s : undefined;
    },
    { timeoutMs: 15_000, what: 'the pull to resume' },
  );
  const resumedIn = Date.now() - backAt;
  const ok = breaker.attempts.filter((a) => a.ok).at(-1)!;
  t.log(`source back; probe due in ${pending} ms; resumed (published) after ${resumedIn} ms`);
  t.true(ok.at - backAt <= pending + 300, `the pull resumed at the next probe (${ok.at - backAt} ms after, probe due in ${pending} ms)`);
  t.is(ok.state, 'half_open');
  await waitFor(() => second.framesIn > 60, { timeoutMs: 15_000, what: 'frames to flow again' });
  t.is(breaker.state, 'closed');
  t.is(await gw.metric('tributary_breaker_state', { target }), 0);

  const after = await waitFor(
    async () => {
      const p = await playlist(gw, '/hls/live/cam/index.m3u8');
      if (!p) return undefined;
      const pl = parseMediaPlaylist(p);
      const i = pl.segments.findIndex((s) => s.discontinuity);
      return i > 0 && pl.segments.length - i >= 2 && !pl.endList ? pl : undefined;
    },
    { timeoutMs: 15_000, what: 'the playlist to continue after a DISCONTINUITY' },
  );
  t.is(after.segments[0]!.uri, parsedDuring.segments[0]!.uri, 'the same playlist continues (not a reset)');
  t.is(after.segments.filter((s) => s.discontinuity).length, 1);

  const [pub1, pub2] = timelines.filter((p) => p.key === 'live/cam');
  t.truthy(pub1 && pub2);
  t.is(pub1!.backwards + pub2!.backwards, 0, 'DTS increases on every track');
  t.true(pub2!.firstDts! > pub1!.lastDts!, `the second publication starts after the first (${pub2!.firstDts} > ${pub1!.lastDts})`);
  await closeClean(t, gw);
});

test.serial('deadlines cut sources that hang: no SYN-ACK (connect timeout), no handshake answer, silence after play starts; each counted', async (t) => {
  // A source that never answers the RTMP handshake: it accepts TCP and reads nothing.
  const held = new Set<Socket>();
  let accepted = 0;
  const mute = createServer((sock) => {
    accepted++;
    held.add(sock);
    sock.on('error', () => {});
    sock.on('close', () => held.delete(sock));
  });
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    mute.close();
  });
  const mutePort = (mute.address() as { port: number }).port;

  // A source whose accept queue is full: SYNs are dropped and connect() never completes. A child that
  // listens with a backlog of 1 and then blocks without accepting (Atomics.wait, no CPU).
  const stuck = start(
    process.execPath,
    [
      '-e',
      `const s = require('node:net').createServer(); s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
         require('node:fs').writeSync(1, s.address().port + '\\n');
         Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60000);
       });`,
    ],
    { timeoutMs: 90_000 },
  );
  t.teardown(() => stuck.kill());
  const stuckPort = Number(await waitFor(() => stuck.stdout().trim() || undefined, { timeoutMs: 10_000, what: 'the stuck listener' }));
  // Fill its accept queue so that further SYNs are dropped.
  const fillers: Socket[] = [];
  for (let i = 0; i < 4; i++) {
    const f = connect(stuckPort, '127.0.0.1');
    f.on('error', () => {});
    fillers.push(f);
  }
  t.teardown(() => fillers.forEach((f) => f.destroy()));
  await waitFor(() => fillers.filter((f) => f.readyState === 'open').length >= 2, { timeoutMs: 5000, what: 'two fillers in the accept queue' });

  const nginx = await startNginx();
  t.teardown(() => nginx.dispose());
  const src = publish(nginx.url('live/src'), { seconds: 60, width: 320, height: 240, gop: 15 });
  t.teardown(() => src.kill());
  t.teardown(() => src.child.kill('SIGCONT'));

  const gw = await startTestGateway({
    outbound: { connectTimeoutMs: 600, backoff: { initialMs: 300, maxMs: 600 }, breaker: { failures: 2 } },
    deadlines: { handshakeMs: 500, idleMs: 1000, writeStallMs: 2000 },
    pulls: [
      { url: `rtmp://127.0.0.1:${mutePort}/live/x`, app: 'live', name: 'mute' },
      { url: `rtmp://127.0.0.1:${stuckPort}/live/x`, app: 'live', name: 'nosyn' },
      { url: nginx.url('live/src'), app: 'live', name: 'stall' },
    ],
  });
  t.teardown(() => gw.close());

  const muteBreaker = gw.breakers.get(`rtmp://127.0.0.1:${mutePort}/live/x`)!;
  await waitFor(() => muteBreaker.attempts.length >= 3, { timeoutMs: 10_000, what: 'three attempts on the mute source' });
  t.true(muteBreaker.attempts.every((a) => !a.ok && a.error === 'handshake deadline expired'), JSON.stringify(muteBreaker.attempts));
  t.true(accepted >= 3);
  await waitFor(() => held.size === 0 || accepted > 3, { timeoutMs: 2000, what: 'the gateway to hang up on the mute source' });
  t.true((await gw.metric('tributary_socket_deadline_expired_total', { protocol: 'rtmp-pull', kind: 'handshake' })) >= 3);

  const synBreaker = gw.breakers.get(`rtmp://127.0.0.1:${stuckPort}/live/x`)!;
  await waitFor(() => synBreaker.attempts.length >= 2, { timeoutMs: 10_000, what: 'two attempts on the source that never completes connect' });
  t.true(synBreaker.attempts.every((a) => !a.ok && /connect timeout/.test(a.error ?? '')), JSON.stringify(synBreaker.attempts));
  t.true((await gw.metric('tributary_socket_deadline_expired_total', { protocol: 'rtmp-pull', kind: 'connect' })) >= 2);
  t.is(muteBreaker.state === 'closed' || synBreaker.state === 'closed', false, 'both breakers opened after 2 failures');

  const s = await waitFor(() => gw.registry.get('live', 'stall'), { timeoutMs: 20_000, what: 'the pull from nginx' });
  await waitFor(() => s.framesIn > 30, { timeoutMs: 10_000, what: 'frames' });
  src.child.kill('SIGSTOP');
  const stoppedAt = performance.now();
  await waitFor(() => s.ended, { timeoutMs: 5000, what: 'the stalled pull to be cut' });
  const cutAfter = performance.now() - stoppedAt;
  t.true(cutAfter >= 900 && cutAfter < 3000, `stalled source cut after ${Math.round(cutAfter)} ms (idle deadline 1000 ms)`);
  t.true(s.ended!.includes('read-idle deadline expired'), s.ended);
  t.true((await gw.metric('tributary_socket_deadline_expired_total', { protocol: 'rtmp-pull', kind: 'idle' })) >= 1);
  t.true(gw.logs.some((l) => l.msg === 'pull ended' && l.reason === 'read-idle deadline expired'));
  await closeClean(t, gw);
});
