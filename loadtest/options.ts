/** The load CLI's flags: parsed strictly, with defaults, and refusing targets off this machine unless asked. */
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { defaultCacheDir } from './media.ts';
import type { LoadOptions } from './run.ts';

export const HELP = `Usage: npm run loadtest -- [options]

  --protocol rtmp|whip     what the publishers speak (default rtmp)
  --publishers N           publishers, one stream each (default 10)
  --viewers N              HLS viewers over those streams (default 0)
  --rtmp-players N         RTMP players over those streams (default 0)
  --duration S             measured window in seconds (default 60)
  --ramp S                 spread the publishers' connects over S seconds (default publishers/50, at least 2)
  --warmup S               wait after the ramp before measuring (default 6)
  --target HOST            server host (default 127.0.0.1; others need --allow-remote)
  --rtmp-port P            (default 1935)    --http-port P   (default 8080)    --app NAME (default live)
  --rtmp-url URL           rtmp://host:port/app, instead of the three above
  --hls-url TEMPLATE       playlist URL with {name} (default http://HOST:HTTP/hls/APP/{name}/index.m3u8)
  --whip-url TEMPLATE      WHIP endpoint with {name} (default http://HOST:HTTP/whip/APP/{name})
  --token T                WHIP bearer token
  --prefix P               stream names are P0, P1, ... (default lt)
  --playlists-only         viewers poll playlists but do not download segments
  --tick MS                publisher write interval (default 100)
  --cache DIR              where the generated media is kept (default ${defaultCacheDir()})
  --out PREFIX             report files PREFIX.json and PREFIX.md (default loadtest/reports/<time>)
  --nice N                 niceness of this process (default 10)
  --events                 JSON lines on stdout (phases, progress, report path), for the bench
  --quiet                  no progress display
`;

function num(v: string | undefined, name: string, def: number, min = 0, max = 100_000): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name}: expected a number in ${min}..${max}, got ${JSON.stringify(v)}`);
  return n;
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export type CliOptions = LoadOptions & { out: string; nice: number; events: boolean; quiet: boolean };

export function parseCli(argv: string[]): CliOptions | 'help' {
  const { values: v } = parseArgs({
    args: argv,
    strict: true,
    options: {
      protocol: { type: 'string' },
      publishers: { type: 'string' },
      viewers: { type: 'string' },
      'rtmp-players': { type: 'string' },
      duration: { type: 'string' },
      ramp: { type: 'string' },
      warmup: { type: 'string' },
      target: { type: 'string' },
      'rtmp-port': { type: 'string' },
      'http-port': { type: 'string' },
      app: { type: 'string' },
      'rtmp-url': { type: 'string' },
      'hls-url': { type: 'string' },
      'whip-url': { type: 'string' },
      token: { type: 'string' },
      prefix: { type: 'string' },
      'playlists-only': { type: 'boolean' },
      tick: { type: 'string' },
      cache: { type: 'string' },
      out: { type: 'string' },
      nice: { type: 'string' },
      events: { type: 'boolean' },
      quiet: { type: 'boolean' },
      'allow-remote': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) return 'help';
  const protocol = v.protocol ?? 'rtmp';
  if (protocol !== 'rtmp' && protocol !== 'whip') throw new Error(`--protocol: rtmp or whip, not ${JSON.stringify(protocol)}`);
  const publishers = num(v.publishers, 'publishers', 10, 0, 5000);
  const host = v.target ?? '127.0.0.1';
  const app = v.app ?? 'live';
  const rtmpUrl = v['rtmp-url'] ?? `rtmp://${host}:${num(v['rtmp-port'], 'rtmp-port', 1935, 1, 65535)}/${app}`;
  const http = `http://${host}:${num(v['http-port'], 'http-port', 8080, 1, 65535)}`;
  const hlsUrl = v['hls-url'] ?? `${http}/hls/${app}/{name}/index.m3u8`;
  const whipUrl = v['whip-url'] ?? `${http}/whip/${app}/{name}`;
  for (const u of [rtmpUrl, hlsUrl.replaceAll('{name}', 'x'), whipUrl.replaceAll('{name}', 'x')]) {
    const h = new URL(u).hostname;
    if (!isLoopback(h) && !v['allow-remote']) throw new Error(`${u} is not on this machine; pass --allow-remote to load another host`);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  return {
    protocol,
    publishers,
    viewers: num(v.viewers, 'viewers', 0, 0, 10_000),
    rtmpPlayers: num(v['rtmp-players'], 'rtmp-players', 0, 0, 10_000),
    durationS: num(v.duration, 'duration', 60, 1, 24 * 3600),
    rampS: num(v.ramp, 'ramp', Math.max(2, publishers / 50), 0, 3600),
    warmupS: num(v.warmup, 'warmup', 6, 0, 3600),
    rtmpUrl,
    hlsUrl,
    whipUrl,
    prefix: v.prefix ?? 'lt',
    cacheDir: v.cache ?? defaultCacheDir(),
    tickMs: num(v.tick, 'tick', 100, 5, 1000),
    fetchSegments: !v['playlists-only'],
    ...(v.token ? { token: v.token } : {}),
    out: v.out ?? resolve('loadtest/reports', stamp),
    nice: num(v.nice, 'nice', 10, 0, 19),
    events: !!v.events,
    quiet: !!v.quiet,
  };
}
