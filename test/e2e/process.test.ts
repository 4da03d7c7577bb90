import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { publish } from '../helpers/ffmpeg.ts';
import { run, start } from '../helpers/process.ts';
import { waitFor } from '../helpers/wait.ts';

const MAIN = ['--import', 'tsx', 'gateway/main.ts'];

test('a config with a wrongly typed key fails naming the key, exit code 2, no stack trace', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'trib-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'bad.yaml');
  writeFileSync(path, 'rtmp:\n  listen:\n    port: "not-a-port"\n');
  const r = await run('node', [...MAIN, '--config', path], { timeoutMs: 20_000 });
  t.is(r.code, 2);
  t.regex(r.stderr, /rtmp\.listen\.port/);
  t.notRegex(r.stderr, /\n\s+at /);

  const env = { ...process.env, TRIBUTARY_HTTP_PORT: 'eighty' };
  const r2 = await run('node', MAIN, { timeoutMs: 20_000, env });
  t.is(r2.code, 2);
  t.regex(r2.stderr, /TRIBUTARY_HTTP_PORT/);

  writeFileSync(path, 'streams:\n  onConflict: replace\n  bogus: 1\n');
  const r3 = await run('node', [...MAIN, '--config', path], { timeoutMs: 20_000 });
  t.is(r3.code, 2);
  t.regex(r3.stderr, /streams\.onConflict/);
  t.regex(r3.stderr, /unknown key streams\.bogus/);
});

test('SIGTERM with a publisher connected: stops accepting, ends the session, exits 0 within 5 s', async (t) => {
  const env = { ...process.env, TRIBUTARY_RTMP_PORT: '0', TRIBUTARY_HTTP_PORT: '0', TRIBUTARY_RTMP_HOST: '127.0.0.1', TRIBUTARY_HTTP_HOST: '127.0.0.1' };
  const gw = start('node', MAIN, { timeoutMs: 60_000, env });
  t.teardown(() => gw.kill());
  const listening = await waitFor(
    () => {
      const line = gw.stdout().split('\n').find((l) => l.includes('"listening"'));
      return line ? (JSON.parse(line) as { rtmp: { port: number }; http: { port: number } }) : undefined;
    },
    { timeoutMs: 20_000, what: 'the gateway to listen' },
  );
  const health = await fetch(`http://127.0.0.1:${listening.http.port}/healthz`);
  t.is(health.status, 200);
  const ff = publish(`rtmp://127.0.0.1:${listening.rtmp.port}/live/bye`, { seconds: 30, width: 160, height: 120 });
  t.teardown(() => ff.kill());
  await waitFor(() => gw.stdout().includes('session start: publishing'), { timeoutMs: 15_000, what: 'the publish to start' });

  const sentAt = performance.now();
  gw.child.kill('SIGTERM');
  const r = await gw.done;
  t.true(performance.now() - sentAt < 5000);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /server shutting down \(SIGTERM\)/);
  t.regex(r.stdout, /"msg":"stopped"/);
  await ff.done;
});

test('a port already in use: the process says so and exits 1 by itself, nothing left holding it open', async (t) => {
  const { createServer } = await import('node:net');
  const busy = createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => busy.close());
  const port = (busy.address() as { port: number }).port;
  const env = { ...process.env, TRIBUTARY_RTMP_PORT: '0', TRIBUTARY_RTMP_HOST: '127.0.0.1', TRIBUTARY_HTTP_HOST: '127.0.0.1', TRIBUTARY_HTTP_PORT: String(port) };
  // No signal is sent: the process must exit on its own, so every listener and timer was released.
  const r = await run('node', MAIN, { timeoutMs: 30_000, env });
  t.is(r.code, 1);
  t.regex(r.stdout, /"msg":"cannot start"/);
  t.regex(r.stdout, /EADDRINUSE/);
});
