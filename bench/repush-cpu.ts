/**
 * CPU cost of re-push, measured (`npm run bench:repush`).
 * One 720p stream (~3 Mbit/s, looped from a pre-encoded file with -c copy so the publisher costs next to
 * nothing) into the in-process gateway; the gateway's own CPU (process.cpuUsage) over a fixed 10 s window,
 * first with no re-push, then with 20 destinations on nginx-rtmp.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestGateway } from '../test/helpers/gateway.ts';
import { startNginx } from '../test/helpers/nginx.ts';
import { run, start } from '../test/helpers/process.ts';
import { waitFor } from '../test/helpers/wait.ts';

const PUSHES = 20;
const WINDOW_MS = 10_000;


/** CPU milliseconds this process spends per wall second over `ms`, waiting on the clock (not a sleep of the work). */
async function cpuPerSecond(ms: number): Promise<number> {
  const before = process.cpuUsage();
  const t0 = performance.now();
  await waitFor(() => performance.now() - t0 >= ms || undefined, { timeoutMs: ms + 5000, intervalMs: 100, what: 'the measuring window' });
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / ((performance.now() - t0) / 1000);
}

const cleanups: Array<() => unknown> = [];
try {
  const dir = mkdtempSync(join(tmpdir(), 'trib-bench-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'src.flv');
  const enc = await run(
    'ffmpeg',
    [
      ...['-hide_banner', '-loglevel', 'error', '-f', 'lavfi', '-i', 'testsrc2=size=1280x720:rate=30', '-f', 'lavfi', '-i', 'sine=frequency=440:sample_rate=48000'],
      ...['-t', '10', '-c:v', 'libx264', '-preset', 'veryfast', '-b:v', '3M', '-maxrate', '3M', '-bufsize', '3M', '-g', '60', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-b:a', '128k', '-f', 'flv', file],
    ],
    { timeoutMs: 120_000 },
  );
  assert.equal(enc.code, 0, enc.stderr);
  const nginx = await startNginx();
  cleanups.push(() => nginx.dispose());
  const urls = Array.from({ length: PUSHES }, (_, i) => nginx.url(`live/copy${i}`));
  const gw = await startTestGateway({ log: { level: 'info' }, outbound: { maxPushesPerStream: PUSHES }, push: { live: urls } });
  cleanups.push(() => gw.close());
  const loop = (url: string) =>
    start('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-re', '-stream_loop', '-1', '-i', file, '-c', 'copy', '-f', 'flv', url], { timeoutMs: 170_000 });

  const base = loop(gw.rtmpUrl('base/x'));
  cleanups.push(() => base.kill());
  const b = await waitFor(() => gw.registry.get('base', 'x'), { timeoutMs: 10_000, what: 'the baseline stream' });
  await waitFor(() => b.framesIn > 150, { timeoutMs: 15_000, what: 'warm-up' });
  const idle = await cpuPerSecond(WINDOW_MS);
  const baseFrames = b.framesIn;
  await base.kill();

  const pushed = loop(gw.rtmpUrl('live/x'));
  cleanups.push(() => pushed.kill());
  const s = await waitFor(() => gw.registry.get('live', 'x'), { timeoutMs: 10_000, what: 'the pushed stream' });
  await waitFor(() => gw.pushes.list().filter((p) => p.sessions.some((x) => x.state === 'up')).length === PUSHES, {
    timeoutMs: 20_000,
    what: `${PUSHES} pushes up`,
  });
  await waitFor(() => s.framesIn > 150, { timeoutMs: 15_000, what: 'warm-up' });
  const outBefore = await gw.metric('tributary_rtmp_frames_out_total', { output: 'push' });
  const withPushes = await cpuPerSecond(WINDOW_MS);
  const framesOut = (await gw.metric('tributary_rtmp_frames_out_total', { output: 'push' })) - outBefore;
  const dropped = gw.pushes.list().reduce((n, p) => n + p.sessions.reduce((m, x) => m + x.framesDropped, 0), 0);
  assert.equal(dropped, 0, 'no destination fell behind');
  assert.ok(gw.pushes.list().every((p) => p.sessions[0]?.state === 'up'), 'every push stayed up');
  console.log(
    `gateway CPU: ${idle.toFixed(1)} ms/s with no re-push (${baseFrames} frames in), ${withPushes.toFixed(1)} ms/s with ${PUSHES} re-pushes ` +
      `(${framesOut} frames out in ${WINDOW_MS / 1000} s): ${((withPushes - idle) / PUSHES).toFixed(2)} ms/s (${((withPushes - idle) / PUSHES / 10).toFixed(2)} % of a core) per re-push`,
  );
  await pushed.kill();
  await gw.close();
  assert.equal(gw.pool.bytesInUse, 0, 'pool back to zero');
  assert.equal(gw.pushes.holding, 0, 'no push left');
} finally {
  for (const c of cleanups.reverse()) await c();
}
