/** The one config schema, with defaults that run with no file at all. */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { totalmem } from 'node:os';
import { z } from 'zod';

const port = z.number().int().min(0).max(65535);
const ms = z.number().int().min(1).max(3_600_000);
const bytes = z.number().int().min(1);

/** An outbound RTMP URL: rtmp://host[:port]/app/name[?query]; a push template may leave out the name. */
const rtmpUrl = (minSegments: 1 | 2) =>
  z
    .string()
    .max(2048)
    .refine(
      (u) => {
        try {
          const url = new URL(u);
          return url.protocol === 'rtmp:' && url.hostname !== '' && url.pathname.split('/').filter(Boolean).length >= minSegments;
        } catch {
          return false;
        }
      },
      minSegments === 2 ? 'expected rtmp://host[:port]/app/name' : 'expected rtmp://host[:port]/app[/name]',
    );
const streamPart = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$/, 'letters, digits, _ . - (up to 128)');

const listen = (defaultPort: number) =>
  z.strictObject({ host: z.string().min(1).default('0.0.0.0'), port: port.default(defaultPort) }).prefault({});

const BITRATE = /^(\d+(?:\.\d+)?)([kKmM]?)$/;
/** Bits per second: a number, or '2500k', '2.5M', '800000'. */
const bitrate = z
  .union([z.number().int().min(1000), z.string().regex(BITRATE, 'expected a bitrate such as 2500k, 2.5M or 800000')])
  .transform((v) => {
    if (typeof v === 'number') return v;
    const m = BITRATE.exec(v)!;
    return Math.round(Number(m[1]) * (m[2] === '' ? 1 : m[2]!.toLowerCase() === 'k' ? 1000 : 1_000_000));
  })
  .refine((v) => v >= 1000 && v <= 200_000_000, 'a bitrate from 1k to 200M');

const rendition = z.strictObject({
  /** The rendition stream is `{app}/{name}_{this name}`. */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/, 'letters, digits, _ and - (up to 32)'),
  /** Output height; the width keeps the source's aspect ratio. Without a height the video is copied (audio still becomes AAC). */
  height: z.number().int().min(16).max(4320).optional(),
  /** Video bitrate; required with a height. */
  bitrate: bitrate.optional(),
});

let nodeAvChecked: { error: string | undefined } | undefined;

/** Why node-av (the optional transcoding dependency) cannot load in this process; undefined when it can. */
function nodeAvLoadError(): string | undefined {
  nodeAvChecked ??= (() => {
    try {
      const require = createRequire(import.meta.url);
      const entry = require.resolve('node-av/lib');
      const root = join(dirname(entry), '..', '..');
      const local = [join(root, 'build', 'Release', 'node-av.node'), join(root, 'binary', 'node-av.node')].find((p) => existsSync(p));
      createRequire(entry)(local ?? `@seydx/node-av-${process.platform}-${process.arch}/node-av.node`);
      return { error: undefined };
    } catch (err) {
      return { error: (err as Error).message.split('\n')[0] };
    }
  })();
  return nodeAvChecked.error;
}

/** The node-av check that transcode validation runs (replaceable in tests). */
export const transcodeDependency = { loadError: nodeAvLoadError };

export const configSchema = z
  .strictObject({
    log: z.strictObject({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') }).prefault({}),
    rtmp: z
      .strictObject({
        listen: listen(1935),
        /** Largest chunk size a peer may set. */
        maxChunkSize: z.number().int().min(128).max(0xffffff).default(65536),
        /** Largest message a peer may send (a keyframe of a high-bitrate stream fits). */
        maxMessageSize: z.number().int().min(1024).max(0xffffff).default(8 * 1024 * 1024),
        /** Chunk size we send. */
        outChunkSize: z.number().int().min(128).max(65536).default(4096),
        maxConnections: z.number().int().min(1).default(1000),
      })
      .prefault({}),
    http: z.strictObject({ listen: listen(8080) }).prefault({}),
    deadlines: z
      .strictObject({ handshakeMs: ms.default(5000), idleMs: ms.default(10_000), writeStallMs: ms.default(10_000) })
      .prefault({}),
    streams: z
      .strictObject({
        maxStreams: z.number().int().min(1).default(1000),
        onConflict: z.enum(['takeover', 'reject']).default('takeover'),
        gopCacheBytes: bytes.default(16 * 1024 * 1024),
        outputQueueBytes: bytes.default(16 * 1024 * 1024),
        outputQueueFrames: z.number().int().min(16).default(2000),
      })
      .prefault({}),
    pool: z
      .strictObject({
        /** Bytes of frames and segments held at once; by default half of this machine's memory. */
        maxBytes: bytes.default(() => Math.floor(totalmem() / 2)),
        /** New publishers are refused while the pool is fuller than this, so live ones keep headroom. */
        refusePublishAbove: z.number().min(0.1).max(1).default(0.9),
      })
      .prefault({}),
    auth: z
      .strictObject({
        /** Per-app publish keys; an app listed here requires `?key=` (RTMP) or a Bearer token (WHIP). */
        streamKeys: z.record(z.string(), z.array(z.string().min(1)).min(1)).default({}),
      })
      .prefault({}),
    webrtc: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** ICE and DTLS must complete within this time of the offer. */
        connectMs: ms.default(10_000),
        /** No media for this long ends a WHIP session. */
        idleMs: ms.default(10_000),
        maxSessions: z.number().int().min(1).default(200),
        /** Ask the browser for a keyframe when none came for this long (0: only after loss); HLS cuts at keyframes. */
        keyframeIntervalMs: z.number().int().min(0).max(60_000).default(2000),
        ice: z
          .strictObject({
            /** Extra host candidates to offer, e.g. a public or NAT address, or 127.0.0.1 for local tests. */
            additionalHostAddresses: z.array(z.string().min(1)).default([]),
            portRange: z.tuple([port, port]).optional(),
            /** Bind ICE to this IPv4 address only. */
            udp4: z.string().min(1).optional(),
          })
          .prefault({}),
      })
      .prefault({}),
    hls: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** Container per app unless the app says otherwise. */
        format: z.enum(['ts', 'fmp4']).default('ts'),
        apps: z.record(z.string(), z.strictObject({ format: z.enum(['ts', 'fmp4']) })).default({}),
        targetDurationMs: z.number().int().min(500).max(30_000).default(2000),
        windowSegments: z.number().int().min(2).max(100).default(6),
        /** How long a playlist outlives its publisher (ENDLIST) so a returning one continues it. */
        graceMs: ms.default(30_000),
        /** Also write segments and playlists under this directory (off by default: memory is the source). */
        directory: z.string().min(1).optional(),
      })
      .prefault({}),
    transcode: z
      .strictObject({
        enabled: z.boolean().default(true),
        /** Per app: the renditions every stream of the app gets, each a stream `{app}/{name}_{rendition}`. */
        apps: z.record(z.string(), z.strictObject({ renditions: z.array(rendition).min(1).max(8) })).default({}),
        /** Renditions transcoding at once across all streams; past it a rendition is refused. */
        maxConcurrent: z.number().int().min(1).max(256).default(4),
        /** A transcode with input waiting and no output for this long is torn down and restarted. */
        stallMs: ms.default(10_000),
        /** Restarts back off exponentially from this delay, with jitter... */
        restartBackoffMs: ms.default(500),
        /** ...up to this one; */
        maxRestartBackoffMs: ms.default(30_000),
        /** after this many failures in a row the renditions end as failed. */
        maxRestarts: z.number().int().min(0).max(100).default(5),
        /** AAC bitrate for Opus sources (WebRTC). */
        audioBitrate: bitrate.default(128_000),
        /** libx264 preset on the CPU backend. */
        preset: z.enum(['ultrafast', 'superfast', 'veryfast', 'faster', 'fast', 'medium']).default('veryfast'),
        /** Decoder and encoder threads per transcode on the CPU backend. */
        threads: z.number().int().min(1).max(16).default(1),
        /** Longest rendition GOP when the source's keyframes are further apart. */
        gopSeconds: z.number().min(0.5).max(10).default(2),
        pool: z
          .strictObject({
            /** Where decoded frames live: auto probes for a CUDA device once at start-up. */
            backend: z.enum(['auto', 'gpu', 'cpu']).default('auto'),
            /** Decoded-frame slots per transcode (CUDA surfaces on the GPU). */
            size: z.number().int().min(2).max(256).default(16),
            /** CUDA device for the GPU backend (index or name). */
            device: z.string().min(1).optional(),
          })
          .prefault({}),
      })
      .superRefine((t, ctx) => {
        const apps = Object.entries(t.apps);
        for (const [app, { renditions }] of apps) {
          const seen = new Set<string>();
          renditions.forEach((r, i) => {
            if (seen.has(r.name)) ctx.addIssue({ code: 'custom', path: ['apps', app, 'renditions', i, 'name'], message: `rendition name ${r.name} is used twice` });
            seen.add(r.name);
            if (r.height !== undefined && r.bitrate === undefined) ctx.addIssue({ code: 'custom', path: ['apps', app, 'renditions', i, 'bitrate'], message: 'a rendition with a height needs a bitrate' });
          });
        }
        if (t.enabled && apps.length > 0) {
          const why = transcodeDependency.loadError();
          if (why !== undefined) {
            ctx.addIssue({
              code: 'custom',
              path: ['apps'],
              message: `renditions are configured but node-av (the optional transcoding dependency) cannot be loaded: ${why}. Install it (npm install node-av) or remove transcode.apps`,
            });
          }
        }
      })
      .prefault({}),
    shutdown: z.strictObject({ graceMs: ms.default(5000) }).prefault({}),
    /** Outbound RTMP (pulls and re-pushes): a connect timeout on top of `deadlines`, backoff and a breaker per target. */
    outbound: z
      .strictObject({
        connectTimeoutMs: ms.default(5000),
        /** Reconnect delays: exponential from initialMs, capped at maxMs, each drawn in [d/2, d) (jitter). */
        backoff: z.strictObject({ initialMs: ms.default(1000), maxMs: ms.default(30_000) }).prefault({}),
        /** Consecutive failed attempts that open a target's breaker; it then lets one probe through per backoff delay. */
        breaker: z.strictObject({ failures: z.number().int().min(1).max(1000).default(5) }).prefault({}),
        maxPulls: z.number().int().min(1).default(100),
        maxPushesPerStream: z.number().int().min(1).default(10),
      })
      .prefault({})
      .refine((o) => o.backoff.maxMs >= o.backoff.initialMs, { message: 'backoff.maxMs must be >= backoff.initialMs', path: ['backoff', 'maxMs'] }),
    /** Streams pulled from remote RTMP servers and published here as app/name. */
    pulls: z
      .array(z.strictObject({ url: rtmpUrl(2), app: streamPart, name: streamPart, key: z.string().min(1).optional() }))
      .default([])
      .refine((ps) => new Set(ps.map((p) => `${p.app}/${p.name}`)).size === ps.length, 'two pulls publish the same app/name'),
    /**
     * Re-push per app: every stream of the app goes to each URL. `{app}` and `{name}` are substituted; a URL
     * with only an app in its path gets `/{name}` appended.
     */
    push: z.record(streamPart, z.array(rtmpUrl(1))).default({}),
  })
  .prefault({});

export type Config = z.output<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;
