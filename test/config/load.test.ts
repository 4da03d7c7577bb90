import test from 'ava';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { ConfigError, buildConfig, configPathFrom, loadConfig } from '../../config/load.ts';

function tempDir(t: import('ava').ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('defaults with no file at all', (t) => {
  const c = loadConfig([], {});
  t.deepEqual(c.rtmp.listen, { host: '0.0.0.0', port: 1935 });
  t.deepEqual(c.http.listen, { host: '0.0.0.0', port: 8080 });
  t.is(c.log.level, 'info');
  t.is(c.rtmp.maxChunkSize, 65536);
  t.is(c.rtmp.maxMessageSize, 8 * 1024 * 1024);
  t.is(c.rtmp.outChunkSize, 4096);
  t.deepEqual(c.deadlines, { handshakeMs: 5000, idleMs: 10_000, writeStallMs: 10_000 });
  t.is(c.streams.onConflict, 'takeover');
  t.is(c.streams.maxStreams, 1000);
  t.is(c.pool.maxBytes, Math.floor(totalmem() / 2), 'half of this machine by default');
  t.is(c.pool.refusePublishAbove, 0.9);
  t.deepEqual(c.auth.streamKeys, {});
  t.is(c.shutdown.graceMs, 5000);
  t.deepEqual(buildConfig({}), c, 'an empty file is the defaults');
});

test('environment overrides', (t) => {
  const c = loadConfig([], {
    TRIBUTARY_RTMP_PORT: '19350',
    TRIBUTARY_HTTP_PORT: '0',
    TRIBUTARY_RTMP_HOST: '127.0.0.1',
    TRIBUTARY_HTTP_HOST: '::1',
    TRIBUTARY_LOG_LEVEL: 'debug',
    TRIBUTARY_UNRELATED: 'x',
  });
  t.deepEqual(c.rtmp.listen, { host: '127.0.0.1', port: 19350 });
  t.deepEqual(c.http.listen, { host: '::1', port: 0 });
  t.is(c.log.level, 'debug');
  t.is(loadConfig([], { TRIBUTARY_RTMP_PORT: '' }).rtmp.listen.port, 1935, 'an empty variable is ignored');
  // Overrides apply on top of what a file sets, and keep the file's other keys.
  const f = buildConfig({ rtmp: { listen: { host: '10.0.0.1', port: 1 } } }, { TRIBUTARY_RTMP_PORT: '2' });
  t.deepEqual(f.rtmp.listen, { host: '10.0.0.1', port: 2 });
});

test('a bad environment value names the variable or the key', (t) => {
  const e1 = t.throws(() => loadConfig([], { TRIBUTARY_RTMP_PORT: 'abc' }), { instanceOf: ConfigError });
  t.regex(e1!.message, /TRIBUTARY_RTMP_PORT/);
  const e2 = t.throws(() => loadConfig([], { TRIBUTARY_HTTP_PORT: '70000' }), { instanceOf: ConfigError });
  t.regex(e2!.message, /http\.listen\.port/);
  const e3 = t.throws(() => loadConfig([], { TRIBUTARY_LOG_LEVEL: 'loud' }), { instanceOf: ConfigError });
  t.regex(e3!.message, /log\.level/);
});

test('a wrongly typed key is named', (t) => {
  const e1 = t.throws(() => buildConfig({ rtmp: { listen: { port: '1935' } } }, {}, 'my.yaml'), { instanceOf: ConfigError });
  t.regex(e1!.message, /^my\.yaml: rtmp\.listen\.port: /);
  const e2 = t.throws(() => buildConfig({ streams: { onConflict: 'queue' } }), { instanceOf: ConfigError });
  t.regex(e2!.message, /streams\.onConflict/);
  const e3 = t.throws(() => buildConfig({ deadlines: { idleMs: 0 } }), { instanceOf: ConfigError });
  t.regex(e3!.message, /deadlines\.idleMs/);
  const e4 = t.throws(() => buildConfig({ auth: { streamKeys: { live: [''] } } }), { instanceOf: ConfigError });
  t.regex(e4!.message, /auth\.streamKeys\.live\.0/);
  const e5 = t.throws(() => buildConfig({ rtmp: 5 }), { instanceOf: ConfigError });
  t.regex(e5!.message, /: rtmp: /);
  t.throws(() => buildConfig(['a']), { instanceOf: ConfigError, message: /top level must be a mapping/ });
  t.throws(() => buildConfig('port: 1'), { instanceOf: ConfigError, message: /top level must be a mapping/ });
});

test('unknown keys are named with their path', (t) => {
  const e1 = t.throws(() => buildConfig({ rtmpp: {} }), { instanceOf: ConfigError });
  t.regex(e1!.message, /unknown key rtmpp\b/);
  const e2 = t.throws(() => buildConfig({ rtmp: { listen: { prot: 1935 } } }), { instanceOf: ConfigError });
  t.regex(e2!.message, /unknown key rtmp\.listen\.prot\b/);
  const e3 = t.throws(() => buildConfig({ streams: { max: 1, gop: 2 } }), { instanceOf: ConfigError });
  t.regex(e3!.message, /streams\.max/);
  t.regex(e3!.message, /streams\.gop/);
});

test('a YAML file via --config, with env on top', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'tributary.yaml');
  writeFileSync(
    path,
    [
      'rtmp:',
      '  listen: { host: 127.0.0.1, port: 11935 }',
      '  outChunkSize: 8192',
      'streams:',
      '  onConflict: reject',
      'auth:',
      '  streamKeys:',
      '    live: [abc, def]',
      '',
    ].join('\n'),
  );
  const c = loadConfig(['--config', path], {});
  t.deepEqual(c.rtmp.listen, { host: '127.0.0.1', port: 11935 });
  t.is(c.rtmp.outChunkSize, 8192);
  t.is(c.rtmp.maxChunkSize, 65536, 'unset keys keep their defaults');
  t.is(c.streams.onConflict, 'reject');
  t.deepEqual(c.auth.streamKeys, { live: ['abc', 'def'] });
  t.is(loadConfig(['--config', path], { TRIBUTARY_RTMP_PORT: '2000' }).rtmp.listen.port, 2000);
  t.is(loadConfig([`--config=${path}`], {}).rtmp.listen.port, 11935);
  t.is(loadConfig([], { TRIBUTARY_CONFIG: path }).rtmp.listen.port, 11935);
  const empty = join(dir, 'empty.yaml');
  writeFileSync(empty, '# nothing\n');
  t.is(loadConfig(['--config', empty], {}).rtmp.listen.port, 1935, 'an empty YAML file gives the defaults');
});

test('a JSON file via --config; errors name the file', (t) => {
  const dir = tempDir(t);
  const path = join(dir, 'tributary.json');
  writeFileSync(path, JSON.stringify({ http: { listen: { port: 9090 } }, log: { level: 'warn' } }));
  const c = loadConfig(['--config', path], {});
  t.is(c.http.listen.port, 9090);
  t.is(c.log.level, 'warn');

  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ http: { listen: { port: -1 } } }));
  const e1 = t.throws(() => loadConfig(['--config', bad], {}), { instanceOf: ConfigError });
  t.true(e1!.message.startsWith(`${bad}: http.listen.port: `), e1!.message);

  const broken = join(dir, 'broken.json');
  writeFileSync(broken, '{ "http": ');
  t.throws(() => loadConfig(['--config', broken], {}), { instanceOf: ConfigError, message: /not valid JSON/ });
  const brokenYaml = join(dir, 'broken.yaml');
  writeFileSync(brokenYaml, 'rtmp: [unclosed\n');
  t.throws(() => loadConfig(['--config', brokenYaml], {}), { instanceOf: ConfigError, message: /not valid YAML/ });
});

test('an unreadable or missing file is a ConfigError naming the path', (t) => {
  const dir = tempDir(t);
  const missing = join(dir, 'nope.yaml');
  const e1 = t.throws(() => loadConfig(['--config', missing], {}), { instanceOf: ConfigError });
  t.true(e1!.message.startsWith(`${missing}: cannot read: `), e1!.message);
  t.regex(e1!.message, /ENOENT/);
  t.throws(() => loadConfig(['--config', dir], {}), { instanceOf: ConfigError, message: /cannot read/ });
  if (process.getuid?.() !== 0) {
    const locked = join(dir, 'locked.yaml');
    writeFileSync(locked, 'log: { level: info }\n');
    chmodSync(locked, 0);
    t.throws(() => loadConfig(['--config', locked], {}), { instanceOf: ConfigError, message: /cannot read/ });
  }
  t.throws(() => loadConfig(['--config'], {}), { instanceOf: ConfigError, message: /--config needs a path/ });
});

test('configPathFrom prefers the command line over TRIBUTARY_CONFIG', (t) => {
  t.is(configPathFrom(['x', '--config', 'a.yaml'], { TRIBUTARY_CONFIG: 'b.yaml' }), 'a.yaml');
  t.is(configPathFrom(['--config=c.json'], {}), 'c.json');
  t.is(configPathFrom([], { TRIBUTARY_CONFIG: 'b.yaml' }), 'b.yaml');
  t.is(configPathFrom([], { TRIBUTARY_CONFIG: '' }), undefined);
  t.is(configPathFrom([], {}), undefined);
});
